"""Nights inside a recording: one window of samples per time in bed, found by the scorer's own in-bed logic.

1. The recording (one or two legs) is cut where both legs are silent for :data:`NIGHT_GAP_S` (2 h, the live
   detector's "a hole this long starts a new night"): a phone app's nightly files become one part each.
2. A part is fed once to a :class:`detector.scoring.scorer.NightScorer` (the ``plm score`` scorer), whose epoch
   classification (detector/scoring/inbed.py: lying against the leg's upright direction learned from walking)
   says, per 30-s epoch, in bed or not.
3. In-bed epochs closer than :data:`MERGE_GAP_S` (a trip to the bathroom) form one time in bed; times in bed
   of one night's anchor (the noon before) closer than :data:`NIGHT_UP_GAP_S`, or each long enough to be a
   night, are joined (:func:`join_spells`: a night's summary is stored at its anchor, two would overwrite each
   other); one of at least :data:`MIN_NIGHT_IN_BED_S` is a night (a nap or an hour on the sofa with the feet up is not).
   A night is the time in bed with :data:`MARGIN_S` of getting into and out of bed on each side, never past
   the middle between two nights. A part no longer than one recording may be (36 h) that holds at most one
   such night is kept whole (even with a shorter time in bed): scored as ``plm score`` would score the file.
   A night crossing midnight is one night.

A part of at most :data:`ONE_NIGHT_S` is one night without a search (``plm score`` searches only longer
recordings too). A part where no walking is seen (no upright direction) cannot be split: it is one night when it is no longer
than 36 h, else refused (:class:`RecordingError`) with the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector.recordings import RecordingError
from detector.recordings.csvio import MAX_RECORDING_S, describe_span

NIGHT_GAP_S = 2 * 3600.0  # as detector.live.night.NIGHT_GAP_S: silence this long separates nights
MERGE_GAP_S = 90 * 60.0  # out of bed for less than this inside a night (bathroom, a drink) keeps the night whole
MIN_NIGHT_IN_BED_S = 2 * 3600.0  # less time in bed is a nap or a rest, not a night
NIGHT_UP_GAP_S = 4 * 3600.0  # spells of one night (one anchor) closer than this are one night, up in between
MARGIN_S = 30 * 60.0  # kept before and after a night's time in bed (getting into and out of bed)
FEED_S = 3600.0  # the split scorer is fed an hour at a time (bounded temporaries on a 7-day file)
ONE_NIGHT_S = 16 * 3600.0  # a part no longer than this is one night's recording: not searched (saves a pass)


@dataclass(frozen=True)
class Night:
    start: float  # Unix s: the window of samples that is this night
    end: float
    in_bed_s: float  # time in bed found (the whole window when not searched or no walking was seen)
    split: bool  # True: cut out of a longer part by time in bed


@dataclass(frozen=True)
class Skipped:
    start: float
    end: float
    in_bed_s: float
    reason: str


def parts(legs: dict[str, np.ndarray]) -> list[tuple[float, float]]:
    """Spans of the recording where some leg has data, cut at silences of :data:`NIGHT_GAP_S` of every leg."""
    spans: list[tuple[float, float]] = []
    for t in legs.values():
        breaks = np.flatnonzero(np.diff(t) >= NIGHT_GAP_S)
        starts = np.r_[0, breaks + 1]
        ends = np.r_[breaks, t.shape[0] - 1]
        spans += [(float(t[a]), float(t[b])) for a, b in zip(starts, ends, strict=True)]
    spans.sort()
    merged: list[tuple[float, float]] = []
    for lo, hi in spans:
        if merged and lo - merged[-1][1] < NIGHT_GAP_S:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def find_nights(
    legs: dict[str, tuple[np.ndarray, np.ndarray]], *, name: str = "the recording"
) -> tuple[list[Night], list[Skipped]]:
    """The nights in ``legs`` (side -> (t, xyz)), and what was not a night with the reason."""
    nights: list[Night] = []
    skipped: list[Skipped] = []
    for lo, hi in parts({side: t for side, (t, _) in legs.items()}):
        found, left_out = _nights_in_part(legs, lo, hi, name)
        nights += found
        skipped += left_out
    return nights, skipped


def _nights_in_part(
    legs: dict[str, tuple[np.ndarray, np.ndarray]], lo: float, hi: float, name: str
) -> tuple[list[Night], list[Skipped]]:
    from detector.scoring.scorer import NightScorer

    if hi - lo <= ONE_NIGHT_S:  # too short for two nights and the day between: scored whole, no extra pass
        return [Night(lo, hi, hi - lo, split=False)], []
    window = {}
    for side, (t, xyz) in legs.items():
        a, b = np.searchsorted(t, [lo, hi], side="left")
        b = np.searchsorted(t, hi, side="right")
        if b > a:
            window[side] = (t[a:b], xyz[a:b])
    scorer = NightScorer(sides=tuple(sorted(window)), keep_events=False)
    edge = lo
    while edge <= hi:
        for side, (t, xyz) in window.items():
            a, b = np.searchsorted(t, [edge, edge + FEED_S])
            if b > a:
                scorer.feed(side, t[a:b], xyz[a:b])
        edge += FEED_S
    epochs = scorer.epoch_classification()
    epoch_s = scorer.params.epoch_s
    if not any(epochs.posture_reference.values()):
        if hi - lo > MAX_RECORDING_S:
            span = describe_span(np.array([lo, hi]))
            raise RecordingError(
                f"{name}: {(hi - lo) / 3600:,.0f} h without a walk ({span}), so nights cannot be told from days "
                "(time in bed is found from the leg's posture, learned from walking): import one night at a time"
            )
        return [Night(lo, hi, hi - lo, split=False)], []
    beds = join_spells(_times_in_bed(epochs.epochs[epochs.in_bed].astype(np.float64) * epoch_s, epoch_s))
    nights = [(a, b, s) for a, b, s in beds if s >= MIN_NIGHT_IN_BED_S]
    skipped = [
        Skipped(a, b, s, f"{s / 60:.0f} min in bed, not a night (a night has at least {MIN_NIGHT_IN_BED_S / 3600:g} h)")
        for a, b, s in beds
        if s < MIN_NIGHT_IN_BED_S
    ]
    if hi - lo <= MAX_RECORDING_S and len(nights) <= 1 and beds:
        # one night's recording (a phone app's file, a CSV): scored whole, as plm score scores it, also when
        # the time in bed is short (the person chose to record it)
        return [Night(lo, hi, max(s for _, _, s in beds), split=False)], []
    if not nights:
        return [], skipped
    out = []
    for i, (a, b, s) in enumerate(nights):
        start = max(lo, a - MARGIN_S, (nights[i - 1][1] + a) / 2 if i else lo)
        end = min(hi, b + MARGIN_S, (b + nights[i + 1][0]) / 2 if i + 1 < len(nights) else hi)
        out.append(Night(start, end, s, split=True))
    return out, skipped


def join_spells(
    spells: list[tuple[float, float, float]], anchor: Callable[[float], float] | None = None
) -> list[tuple[float, float, float]]:
    """Times in bed (start, end, seconds in bed) that belong to one night joined into one.

    A night's summary is stored at its anchor (the local noon before it, detector.storage.diary.night_start_for), so two
    nights with one anchor would overwrite each other's summary. Joined: spells of one anchor less than
    :data:`NIGHT_UP_GAP_S` apart (up for two hours in the night, as restless legs make people do), and any two
    spells of one anchor that are each a night. A nap in the afternoon stays apart from the night after it."""
    if anchor is None:
        from detector.storage.diary import night_start_for

        anchor = night_start_for
    close: list[tuple[float, float, float]] = []
    for a, b, s in spells:
        if close and anchor(close[-1][0]) == anchor(a) and a - close[-1][1] < NIGHT_UP_GAP_S:
            pa, _, ps = close[-1]
            close[-1] = (pa, b, ps + s)
        else:
            close.append((a, b, s))
    out: list[tuple[float, float, float]] = []
    for a, b, s in close:
        if s >= MIN_NIGHT_IN_BED_S:  # an earlier night of this anchor: one night from it to here
            k = next(
                (
                    i
                    for i in range(len(out) - 1, -1, -1)
                    if out[i][2] >= MIN_NIGHT_IN_BED_S and anchor(out[i][0]) == anchor(a)
                ),
                None,
            )
            if k is not None:
                out[k:] = [(out[k][0], b, sum(x[2] for x in out[k:]) + s)]
                continue
        out.append((a, b, s))
    return out


def _times_in_bed(starts: np.ndarray, epoch_s: float) -> list[tuple[float, float, float]]:
    """In-bed epochs (their start times) joined across gaps shorter than MERGE_GAP_S: (start, end, seconds in bed)."""
    if starts.shape[0] == 0:
        return []
    breaks = np.flatnonzero(np.diff(starts) > MERGE_GAP_S) + 1
    out = []
    for run in np.split(starts, breaks):
        out.append((float(run[0]), float(run[-1] + epoch_s), float(run.shape[0] * epoch_s)))
    return out
