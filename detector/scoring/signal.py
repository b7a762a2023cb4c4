"""The activity signal of one sensor: band-passed acceleration magnitude and its adaptive noise floor.

Why this signal: a leg movement tilts the shank, which moves gravity between the sensor axes by
about |g| * angle (a 5 degree tilt is ~90 mg), and it adds linear acceleration. Filtering each axis
with the same linear filter and taking the vector norm keeps both and is exactly invariant to how the
sensor is mounted (a rotation commutes with a per-axis linear filter and preserves the norm). The
low-pass removes sensor noise above leg-motion frequencies; the lagged difference removes the static
gravity vector without a high-pass filter's long tail. Every stage is causal with carried state, so feeding a night in
any chunking gives bit-identical numbers (the compiled filters carry their state exactly across chunks,
and the noise floor uses order statistics of blocks aligned to the sample index, not to chunk edges).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.scoring.edges import EdgeWindows
from detector.scoring.kernels import activity_chain, running_floor
from detector.scoring.params import DetectorParams

logger = logging.getLogger(__name__)

DESIGN_VERSION = 1
"""Bump when :func:`_compute_design` changes: the on-disk design cache is keyed by it."""

MIN_RATE_HZ = 10.0
"""Below this the 4 Hz low-pass (and leg motion itself) cannot be represented."""


def estimate_rate_hz(t: np.ndarray, hole_periods: float = 1.5) -> float:
    """Sample rate (Hz) from sample times: the mean spacing of the steps that are not holes.

    The median step finds the nominal spacing and so the holes (steps longer than ``hole_periods`` of
    it: dropped packets); the rate is then the number of remaining steps over their total time. The
    median alone is biased when timestamps are rounded: at 52 Hz with millisecond timestamps (most CSV
    exports) the steps are 19 and 20 ms, 0.019/0.020 alternating, and the median picks one of them
    (52.63 or 50 Hz instead of 52). The mean of the hole-free steps is (last - first) / count over each
    stretch, so rounding and per-packet jitter only enter at the stretches' ends.
    """
    steps = np.diff(np.asarray(t, dtype=np.float64))
    if steps.shape[0] == 0:
        raise ValueError("need at least two samples to estimate the sample rate")
    nominal = float(np.median(steps))
    if not nominal > 0:
        raise ValueError("sample times must increase to estimate the sample rate")
    regular = steps[steps <= hole_periods * nominal]
    return float(regular.shape[0] / regular.sum())


@dataclass(frozen=True)
class _FilterDesign:
    low: np.ndarray
    low_zi: np.ndarray
    env: np.ndarray
    lag_n: int
    fast: np.ndarray
    fast_zi: np.ndarray
    boundary_delay_s: float
    tremor: np.ndarray
    tremor_zi: np.ndarray


@functools.lru_cache(maxsize=64)
def _design(rate_hz: float, params: DetectorParams) -> _FilterDesign:
    """The filters of one sample rate, designed once and shared by every leg at that rate: designing
    them costs milliseconds, which a live service starting thousands of sensors should pay once.

    Designs are also kept on disk (:func:`design_cache_dir`): designing needs ``scipy.signal``, whose
    import costs about a second -- a third of what scoring a night from files may take -- while the
    designs themselves are a few dozen numbers that a machine sees again and again (a sensor model's
    rate). A missing, unreadable or unwritable cache only means designing again."""
    path = _design_cache_path(rate_hz, params)
    if path is not None:
        try:
            with np.load(path) as saved:
                fields: dict[str, Any] = {f.name: _loaded(saved[f.name]) for f in dataclasses.fields(_FilterDesign)}
                return _FilterDesign(**fields)
        except (OSError, KeyError, ValueError):
            pass  # not there yet, or damaged: design afresh
    design = _compute_design(rate_hz, params)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(partial, **dataclasses.asdict(design))
            partial.replace(path)  # atomic: a reader sees the whole file or none
        except OSError as exc:
            logger.debug("filter design cache not written (%s)", exc)
    return design


@functools.lru_cache(maxsize=64)
def _edge_windows(rate_hz: float, params: DetectorParams) -> EdgeWindows:
    """How far the boundary filter of this rate can move a sharp edge (:mod:`detector.scoring.edges`)."""
    design = _design(rate_hz, params)
    return EdgeWindows.of(design.fast, rate_hz, design.boundary_delay_s)


def _loaded(value: np.ndarray) -> np.ndarray | int | float:
    return value.item() if value.ndim == 0 else value


def design_cache_dir() -> Path | None:
    """Where filter designs are cached: ``PLM_CACHE_DIR``, else the user's cache directory; None = off."""
    configured = os.environ.get("PLM_CACHE_DIR")
    if configured is not None:
        return Path(configured) / "filter-designs" if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "plm-monitor" / "filter-designs"


def _design_cache_path(rate_hz: float, params: DetectorParams) -> Path | None:
    directory = design_cache_dir()
    if directory is None:
        return None
    used = (
        DESIGN_VERSION,
        repr(float(rate_hz)),
        params.lowpass_hz,
        params.envelope_s,
        params.boundary_hz,
        params.tremor_low_hz,
        params.tremor_high_hz,
        params.diff_lag_s,
    )
    return directory / (hashlib.sha256(repr(used).encode()).hexdigest()[:24] + ".npz")


def _compute_design(rate_hz: float, params: DetectorParams) -> _FilterDesign:
    from scipy import signal as sps  # here: only a design that is not cached pays for the import

    nyquist = rate_hz / 2
    low = sps.butter(2, min(params.lowpass_hz, 0.45 * rate_hz) / nyquist, "lowpass", output="sos")
    env_hz = 1.0 / (2 * math.pi * params.envelope_s)
    env = sps.butter(1, min(env_hz, 0.45 * rate_hz) / nyquist, "lowpass", output="sos")
    fast_hz = min(params.boundary_hz, 0.45 * rate_hz)
    # Bessel: maximally flat group delay, so a movement's edges are delayed alike whatever their speed,
    # and a step response without overshoot or ringing (a Butterworth overshoots ~4 %: after a jerk the
    # boundary vector swings back past rest and stays outside the noise band longer than the motion)
    fast = sps.bessel(2, fast_hz / nyquist, "lowpass", output="sos", norm="mag")
    # its (flat) group delay at leg-motion frequencies, subtracted from onsets and offsets
    b, a = sps.sos2tf(fast)
    delay_s = float(sps.group_delay((b, a), [0.5], fs=rate_hz)[1][0]) / rate_hz
    band = [params.tremor_low_hz / nyquist, min(params.tremor_high_hz, 0.45 * rate_hz) / nyquist]
    tremor = sps.butter(2, band, "bandpass", output="sos")
    return _FilterDesign(
        low,
        sps.sosfilt_zi(low),
        env,
        max(1, round(params.diff_lag_s * rate_hz)),
        fast,
        sps.sosfilt_zi(fast),
        delay_s,
        tremor,
        sps.sosfilt_zi(tremor),
    )


class ActivityFilter:
    """Per-axis low-pass -> change over ``diff_lag_s`` -> vector norm -> first-order envelope.

    The lagged difference |a(t) - a(t - lag)| is how far the leg's orientation (and so the gravity
    vector in the sensor frame) moved in the last ``lag`` seconds. Unlike a high-pass it has no
    decaying tail after a movement that ends in a new position: it returns to the noise exactly
    ``lag`` seconds after the leg stops, which :class:`detector.scoring.lm.LegDetector` subtracts from the offset.
    Unlike a one-sample derivative it integrates the motion over ``lag``, so slow small tilts stand
    well above sensor noise.
    """

    def __init__(self, rate_hz: float, params: DetectorParams) -> None:
        if rate_hz < MIN_RATE_HZ:
            raise ValueError(f"sample rate {rate_hz:.3g} Hz is too low: the detector needs >= {MIN_RATE_HZ:g} Hz")
        # rates estimated from data differ in the last digits between sensors: designing for the rate
        # rounded to 0.1 mHz changes nothing measurable and lets all sensors at one rate share a design
        self._design = _design(round(rate_hz, 4), params)
        self.lag_n = self._design.lag_n
        self.boundary_delay_s = self._design.boundary_delay_s
        self.edge_windows = _edge_windows(round(rate_hz, 4), params)
        self.quiet_n = max(1, round(params.quiet_lag_s * rate_hz))
        self._state: _ChainState | None = None  # None: the next sample settles the filters

    def reset(self) -> None:
        """Forget the past (after a hole in the data); the next sample settles the filters."""
        self._state = None

    def process(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Envelope (g), low-passed vector (n, 3), boundary vector (n, 3) and stillness signal (g) per sample.

        Continues from the previous call. The low-passed vector (``lowpass_hz``) is the leg's orientation
        (gravity in the sensor frame), used to tell a held or returned leg from one in a new position.
        The boundary vector (``boundary_hz``) is the same with less delay and a short impulse response,
        used to place onsets and offsets where the leg left and came back to rest: it has neither the
        lagged difference's 0.5 s, nor the envelope's decay, nor the tremor band-pass's ringing after a jerk.
        The stillness signal |boundary(t) - boundary(t - quiet_lag)| says whether the leg is still *now*
        (it falls back to the noise ~quiet_lag + 0.1 s after the motion stops, not 0.5 s + the envelope
        decay): it decides when a movement has ended, so a short rest between two movements is seen.
        """
        n = xyz.shape[0]
        xyz = np.ascontiguousarray(xyz, dtype=np.float64)
        env, still = np.empty(n), np.empty(n)
        low, fast = np.empty((n, 3)), np.empty((n, 3))
        if n == 0:
            return env, low, fast, still
        if self._state is None:
            self._state = _ChainState.settled(self._design, self.quiet_n, xyz[0])
        d, st = self._design, self._state
        activity_chain(
            xyz,
            d.fast,
            st.fast_zi,
            st.fast_ring,
            d.low,
            st.low_zi,
            st.low_ring,
            d.tremor,
            st.tremor_zi,
            d.env,
            st.env_zi,
            st.positions,
            env,
            low,
            fast,
            still,
            np.empty((n, 6)),
        )
        return env, low, fast, still


@dataclass
class _ChainState:
    """Everything the activity chain carries from one sample to the next (a few hundred floats)."""

    fast_zi: np.ndarray  # (sections, 2, 3) filter states, as scipy's sosfilt zi for axis 0
    fast_ring: np.ndarray  # last quiet_n boundary vectors
    low_zi: np.ndarray
    low_ring: np.ndarray  # last lag_n low-passed vectors
    tremor_zi: np.ndarray
    env_zi: np.ndarray  # (sections, 2, 1)
    positions: np.ndarray  # next slot of fast_ring, of low_ring

    @classmethod
    def settled(cls, design: _FilterDesign, quiet_n: int, first: np.ndarray) -> _ChainState:
        """Steady state for a constant input = the first sample: gravity produces no transient."""
        first = np.asarray(first, dtype=np.float64)
        return cls(
            design.fast_zi[:, :, None] * first[None, None, :],
            np.repeat(first[None, :], quiet_n, axis=0),
            design.low_zi[:, :, None] * first[None, None, :],
            np.repeat(first[None, :], design.lag_n, axis=0),
            design.tremor_zi[:, :, None] * first[None, None, :],
            np.zeros((design.env.shape[0], 2, 1)),
            np.zeros(2, dtype=np.int64),
        )


class NoiseFloor:
    """Adaptive per-sensor noise floor: a low order statistic of recent block medians of the envelope.

    Blocks are ``block_n`` consecutive samples counted from the sensor's first sample, so block
    boundaries never depend on how the data was chunked. The floor that applies to a block is
    computed only from blocks before it (causal). Until the first block is complete the floor is
    infinite, i.e. nothing is detected in the sensor's first second.
    """

    def __init__(self, block_n: int, window_blocks: int, quantile: float) -> None:
        self.block_n = max(1, int(block_n))
        self.window = max(1, int(window_blocks))
        self.rank = min(self.window - 1, int(quantile * (self.window - 1)))
        self._partial = np.zeros(self.block_n)  # the block being filled
        self._medians = np.zeros(self.window)  # the last ``window`` block medians, in arrival order ...
        self._ordered = np.zeros(self.window)  # ... and sorted
        self._state = np.zeros(3, dtype=np.int64)  # next ring slot, window filled (0/1), samples in _partial
        self._current = np.array([math.inf])  # floor of the block being filled

    def per_sample(self, env: np.ndarray) -> np.ndarray:
        """The floor (g) that applies to each sample of ``env``; consumes ``env`` into the block state."""
        out = np.empty(env.shape[0])
        running_floor(
            np.ascontiguousarray(env, dtype=np.float64),
            self.rank,
            self._partial,
            self._medians,
            self._ordered,
            self._state,
            self._current,
            out,
        )
        return out
