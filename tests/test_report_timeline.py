"""The night report as a person reads it: a dense night's timeline stays readable (per-minute density
columns instead of marks piled on marks), its colours stay apart for colour-blind readers, the 14-night
chart draws the median line its caption promises and keeps the 15/h label off the bars, and the count of
nights above 15/h is said once, in words."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest

from detector.reporting.report import (
    KIND_COLOURS,
    LANE_COLOUR,
    SERIES_COLOUR,
    bars_svg,
    build_report,
    density_height,
    history_caption,
    nights_above,
    render_html,
    timeline_of,
    timeline_svg,
)

NIGHT = dt.date(2024, 3, 14)
START = dt.datetime(2024, 3, 14, 22, 40, tzinfo=dt.UTC).timestamp()

# Machado, Oliveira & Fernandes (2009), "A physiologically-based model for simulation of color vision
# deficiency", IEEE TVCG 15(6): the severity-1.0 matrices, applied to linear RGB.
MACHADO_2009 = {
    "deuteranopia": (
        (0.367322, 0.860646, -0.227968),
        (0.280085, 0.672501, 0.047413),
        (-0.011820, 0.042940, 0.968881),
    ),
    "protanopia": (
        (0.152286, 1.052583, -0.204868),
        (0.114503, 0.786281, 0.099216),
        (-0.003882, -0.048116, 1.051998),
    ),
    "tritanopia": (
        (1.255528, -0.076749, -0.178779),
        (-0.078411, 0.930809, 0.147602),
        (0.004733, 0.691367, 0.303900),
    ),
}
MIN_DELTA_E = 20.0
"""CIELAB distance (CIE76) every pair of timeline colours keeps, seen normally and under each simulated
deficiency: about ten times a just-noticeable difference, enough for thin marks next to each other."""


def _linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _lab(linear_rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    r, g, b = (min(max(v, 0.0), 1.0) for v in linear_rgb)
    xyz = (
        (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
        0.2126 * r + 0.7152 * g + 0.0722 * b,
        (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
    )
    f = [v ** (1 / 3) if v > (6 / 29) ** 3 else v / (3 * (6 / 29) ** 2) + 4 / 29 for v in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def seen(colour: str, deficiency: str | None) -> tuple[float, float, float]:
    """The CIELAB colour of an sRGB hex colour, as seen with ``deficiency`` (None: normal vision)."""
    rgb = tuple(_linear(int(colour[i : i + 2], 16) / 255) for i in (1, 3, 5))
    if deficiency is not None:
        rgb = tuple(sum(m * c for m, c in zip(row, rgb, strict=True)) for row in MACHADO_2009[deficiency])
    return _lab(rgb)


def closest_pair(palette: dict[str, str]) -> tuple[float, str, str, str]:
    worst = (float("inf"), "", "", "")
    for deficiency in (None, *MACHADO_2009):
        for (a, ca), (b, cb) in itertools.combinations(palette.items(), 2):
            la, lb = seen(ca, deficiency), seen(cb, deficiency)
            d = sum((x - y) ** 2 for x, y in zip(la, lb, strict=True)) ** 0.5
            worst = min(worst, (d, a, b, deficiency or "normal vision"))
    return worst


def test_the_simulation_sees_what_the_issue_saw() -> None:
    """The old leg-movement orange and twitch mustard were one colour under deuteranopia."""
    old = closest_pair({"lm": "#ef8a17", "twitch": "#c9a400"})
    assert old[0] < 5 and old[3] == "deuteranopia", old
    assert seen("#ffffff", "deuteranopia")[0] == pytest.approx(100, abs=0.5), "white stays white"


def test_timeline_colours_stay_apart_for_colour_blind_readers() -> None:
    palette = {**KIND_COLOURS, "lane background": LANE_COLOUR}
    distance, a, b, vision = closest_pair(palette)
    assert distance >= MIN_DELTA_E, f"{a} and {b} are only {distance:.1f} apart with {vision}"
    series = closest_pair({"PLM series": SERIES_COLOUR, "lane background": LANE_COLOUR})
    assert series[0] >= 15, series  # the series strip has a row of its own; it only has to stand out from it


def movements(every_s: float, hours: float, *, kind: str = "lm", plm: bool = True) -> list[dict]:
    n = int(hours * 3600 / every_s)
    return [
        {"onset": START + 30 + i * every_s, "duration": 2.0, "side": "bilateral", "kind": kind, "plm": plm}
        for i in range(n)
    ]


def report_of(events: list[dict], hours: float, **summary) -> object:
    base = {"start": START, "end": START + hours * 3600, "plm_index": 75.0, "plm_count": len(events)}
    return build_report("alice", {**base, **summary}, events, night=NIGHT, tz=dt.UTC)


def test_a_dense_night_is_drawn_as_per_minute_density() -> None:
    """75 PLMs an hour for 8 hours: one mark per movement would pile marks on marks into a solid block; one
    column per minute, as tall as the movements started in it, never overlaps the next."""
    events = movements(48.0, 8.0) + movements(300.0, 8.0, kind="twitch", plm=False)
    report = report_of(events, 8.0)
    tl = timeline_of(report)
    assert tl.dense
    plm_lane = tl.lanes[("left", "plm")]
    assert len(plm_lane) <= 8 * 60 and sum(m.count for m in plm_lane) == sum(e["plm"] for e in events)
    assert all(m.end - m.start <= 60 for m in plm_lane), "one column per minute"
    assert {m.count for m in plm_lane} == {1, 2}, "48 s apart: one or two onsets a minute"
    assert len(tl.lanes[("right", "twitch")]) == 96, "twitches in their own lane, on both legs"
    for marks in tl.lanes.values():
        assert all(a.end <= b.start for a, b in itertools.pairwise(marks)), "columns side by side, never on top"
    assert 'height="4.0" fill="#d55e00"' in timeline_svg(report), "one onset: a third of the 12 px PLM lane"
    page = render_html(report)
    assert "every column is one minute" in page


def test_a_sparse_night_keeps_one_mark_per_movement() -> None:
    events = movements(40.0, 1.0)
    tl = timeline_of(report_of(events, 1.0))
    assert not tl.dense
    assert len(tl.lanes[("left", "plm")]) == len(events) and len(tl.lanes[("right", "plm")]) == len(events)
    assert "every column is one minute" not in render_html(report_of(events, 1.0))


def test_density_height_counts_up_to_three() -> None:
    assert [density_height(n) for n in (1, 2, 3, 7)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def _bars(svg: str) -> list[tuple[float, float]]:
    return [(float(x), float(w)) for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)]


def test_threshold_label_sits_right_of_every_bar() -> None:
    svg = bars_svg([f"{d:02d}.03" for d in range(1, 15)], [20.0] * 13 + [90.0], threshold=15.0)
    label = re.search(r'<text class="threshold" x="([\d.]+)"[^>]*>15/h</text>', svg)
    assert label is not None
    assert all(float(label.group(1)) > x + w for x, w in _bars(svg)), "the 15/h label is not on a bar"


def history(values: list[float | None]) -> list[tuple[dt.date, float | None]]:
    return [(NIGHT - dt.timedelta(days=len(values) - i), v) for i, v in enumerate(values)]


def test_the_median_line_the_caption_promises_is_drawn() -> None:
    events = movements(40.0, 1.0)
    summary = {"start": START, "end": START + 3600, "plm_index": 40.0, "plm_count": len(events)}
    week = build_report("alice", summary, events, history([20.0, 30.0, None, 25.0]), night=NIGHT, tz=dt.UTC)
    caption = history_caption(week)
    assert "line: median of the last 7 recorded nights" in caption
    page = render_html(week)
    median = re.search(r'<g class="median">(.*?)</g>', page)
    assert median is not None and median.group(1).count("<circle") == 2, "from the third recorded night on"
    alone = build_report("alice", summary, events, night=NIGHT, tz=dt.UTC)
    assert "line: median" not in history_caption(alone) and '<g class="median">' not in render_html(alone)
    assert "appears from the third recorded night" in history_caption(alone)


def test_the_png_draws_the_median_line_too() -> None:
    pytest.importorskip("matplotlib")
    from detector.reporting.render import render_figure
    from detector.reporting.report import NAVY

    events = movements(40.0, 1.0)
    summary = {"start": START, "end": START + 3600, "plm_index": 40.0, "plm_count": len(events)}
    week = build_report("alice", summary, events, history([20.0, 30.0, None, 25.0]), night=NIGHT, tz=dt.UTC)
    fig = render_figure(week, "png")
    navy = [
        line
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_color() == NAVY and line.get_linestyle() == "-" and len(line.get_xdata()) == 2
    ]
    assert navy, "a solid navy line through the two median points (third and fourth recorded night)"


@pytest.mark.parametrize(
    ("above", "recorded", "said"),
    [
        (1, 1, "One night recorded so far; it was above 15/h."),
        (0, 1, "One night recorded so far; it was not above 15/h."),
        (2, 2, "Both recorded nights were above 15/h."),
        (0, 2, "Neither recorded night was above 15/h."),
        (0, 9, "No recorded night was above 15/h."),
        (13, 13, "All 13 recorded nights were above 15/h."),
        (1, 5, "Above 15/h on 1 of the 5 recorded nights."),
        (0, 0, "No night of the last 14 has a PLM index."),
    ],
)
def test_nights_above_is_said_as_a_person_would(above: int, recorded: int, said: str) -> None:
    assert nights_above(above, recorded) == said


def test_the_count_of_nights_is_said_once() -> None:
    events = movements(40.0, 1.0)
    report = report_of(events, 1.0)
    page = render_html(report)
    assert "of the last 1" not in page and "1 of 1" not in page
    assert page.count("One night recorded so far") == 1
    assert "recorded nights" not in report.headline
    assert "plm note" in page and "`" not in page
