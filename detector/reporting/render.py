"""The night report as one PNG or PDF page, drawn with matplotlib from the same :class:`NightReport`
the HTML is rendered from -- so the two formats cannot disagree about a number or a sentence.

Two page shapes: ``pdf`` is A4 portrait (print it, hand it to a doctor); ``png`` is a narrow, tall
page with larger type, made to be read on a phone without zooming into a sheet of paper. The page is
laid out top to bottom in inches on one full-figure axes; text is wrapped by its measured width, so
nothing runs off the page, and the A4 page shrinks type (then drops the oldest diary lines, saying
so) until everything fits.

matplotlib is an optional dependency (``pip install 'plm-monitor[report]'``): the detector service
and the HTML report do not need it, and it is large for a Raspberry Pi next to the bed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.reporting.report import (
    DOCTOR_REASONS,
    LANE_COLOUR,
    LANE_LABELS,
    LANE_PX,
    LANES,
    MEDICATION_NOTE,
    MIN_MARK_PX,
    NAVY,
    NO_DIARY,
    NO_SIGNALS,
    NONWEAR_FILL,
    NOTICE,
    OUT_OF_BED_FILL,
    PLM_THRESHOLD,
    SERIES_COLOUR,
    TIMELINE_WIDTH,
    NightReport,
    density_height,
    history_caption,
    legend_of,
    timeline_note,
    timeline_of,
)

FORMATS = ("png", "pdf")
A4_IN = (8.27, 11.69)
PHONE_WIDTH_IN = 5.6
PHONE_DPI = 200  # 1120 px wide: a phone screen's width in device pixels
INK, MUTED, LINE, RED, BLUE = "#1d2330", "#5b6475", "#d8dce4", "#d32f2f", "#5c7cfa"
FONT = "DejaVu Sans"  # ships with matplotlib: the same glyphs (– ≥ · “”) everywhere
NO_LIGATURES = ("-liga",)  # "affect" stays six searchable characters in the PDF, not a-ff-ect

RC = {  # TrueType text in PDFs (searchable, copyable); unhinted glyphs so measured widths hold at any dpi
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "font.family": FONT,
    "text.hinting": "no_hinting",
}


class RenderUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to get it."""


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the installation
        raise RenderUnavailable(
            "PNG and PDF reports need matplotlib: pip install 'plm-monitor[report]' "
            "(or write .html and print it to PDF from a browser)"
        ) from None
    matplotlib.use("Agg", force=True)  # no display, ever: this runs on servers and in CI
    return matplotlib


def ensure_available() -> None:
    """Raise :class:`RenderUnavailable` now rather than after loading a night's data."""
    _matplotlib()


@dataclass(frozen=True)
class PageShape:
    width_in: float
    height_in: float | None  # None: as tall as the content (the phone page)
    font_pt: float
    margin_in: float
    stat_columns: int
    dpi: int


PAGES = {
    "pdf": PageShape(A4_IN[0], A4_IN[1], 8.6, 0.45, 4, 150),
    "png": PageShape(PHONE_WIDTH_IN, None, 9.5, 0.22, 2, PHONE_DPI),
}


def _clock(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%H:%M")


@functools.cache
def _advance(char: str, bold: bool) -> float:
    """A glyph's advance in points at 1 pt (measured once per character; FreeType, no rendering)."""
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties(family=FONT, weight="bold" if bold else "normal")))
    font.set_size(100, 72)
    return font.load_char(ord(char)).linearHoriAdvance / 65536 / 100


class _Page:
    """A top-down layout cursor in inches. ``draw=False`` only measures, so the page height (phone)
    or the type scale (A4) is known before anything is drawn."""

    def __init__(self, shape: PageShape, scale: float, fig: Any = None, height_in: float = 0.0) -> None:
        self.shape, self.scale, self.fig = shape, scale, fig
        self.width = shape.width_in
        self.height = height_in
        self.left = shape.margin_in
        self.inner = self.width - 2 * shape.margin_in
        self.y = shape.margin_in
        self.page_ax: Any = None  # matplotlib Axes when drawing (measuring passes have none)
        if fig is not None:
            self.page_ax = fig.add_axes((0, 0, 1, 1))
            self.page_ax.set_xlim(0, self.width)
            self.page_ax.set_ylim(self.height, 0)
            self.page_ax.set_axis_off()

    @property
    def draw(self) -> bool:
        return self.fig is not None

    def pt(self, relative: float = 1.0) -> float:
        return self.shape.font_pt * self.scale * relative

    def width_of(self, text: str, size: float, bold: bool = False) -> float:
        """Width in inches: the sum of the glyph advances, plus room for hinting at small sizes."""
        return sum(_advance(c, bold) for c in text) * size / 72.0 * 1.04

    def wrap(self, text: str, width_in: float, size: float, bold: bool = False) -> list[str]:
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split():
                trial = f"{line} {word}" if line else word
                if line and self.width_of(trial, size, bold) > width_in:
                    lines.append(line)
                    line = word
                else:
                    line = trial
            lines.append(line)
        return lines

    def text(
        self,
        text: str,
        relative: float = 1.0,
        *,
        bold: bool = False,
        colour: str = INK,
        x: float | None = None,
        width: float | None = None,
        bullet: str = "",
        after: float = 0.04,
    ) -> None:
        size = self.pt(relative)
        x0 = self.left if x is None else x
        indent = self.width_of(bullet + " ", size) if bullet else 0.0
        avail = (self.inner if width is None else width) - indent
        line_h = size * 1.32 / 72
        for i, line in enumerate(self.wrap(text, avail, size, bold)):
            if self.draw:
                if bullet and i == 0:
                    self._put(x0, self.y, bullet, size, bold, colour)
                self._put(x0 + indent, self.y, line, size, bold, colour)
            self.y += line_h
        self.y += after

    def _put(self, x: float, y: float, s: str, size: float, bold: bool, colour: str) -> None:
        self.page_ax.text(
            x,
            y,
            s,
            fontsize=size,
            fontweight="bold" if bold else "normal",
            color=colour,
            va="top",
            ha="left",
            fontfeatures=NO_LIGATURES,
        )

    def heading(self, title: str) -> None:
        self.y += 0.10 * self.scale
        self.text(title, 1.12, bold=True, after=0.02)
        if self.draw:
            self.page_ax.plot([self.left, self.left + self.inner], [self.y, self.y], color=LINE, lw=0.8)
        self.y += 0.06 * self.scale

    def axes(self, height_in: float, pad_left: float = 0.42, pad_bottom: float = 0.28) -> Any:
        """A chart occupying the next ``height_in`` inches (tick labels included)."""
        h = height_in * self.scale
        ax: Any = None
        if self.draw:
            x0 = self.left + pad_left * self.scale
            w = self.inner - pad_left * self.scale - 0.05
            bottom = self.height - (self.y + h)
            ax = self.fig.add_axes(
                (
                    x0 / self.width,
                    (bottom + pad_bottom * self.scale) / self.height,
                    w / self.width,
                    (h - pad_bottom * self.scale - 0.04) / self.height,
                )
            )
            ax.tick_params(labelsize=self.pt(0.78), length=2, colors=INK)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        self.y += h
        return ax


# ----------------------------------------------------------------------------------- sections


def _header(page: _Page, r: NightReport) -> None:
    page.text(f"Night of {r.night:%A %d %B %Y}", 1.6, bold=True, after=0.02)
    when = f"{_clock(r.start_s, r.tz)}–{_clock(r.end_s, r.tz)} · " if r.start_s and r.end_s else ""
    page.text(f"{r.subject} · {when}scoring rules {r.rules} · leg-movement monitor", 0.85, colour=MUTED)
    top = page.y
    page.y += 0.05
    page.text(r.notice, 0.9, x=page.left + 0.14, width=page.inner - 0.22, after=0.05)
    if page.draw:
        from matplotlib.patches import Rectangle

        page.page_ax.add_patch(Rectangle((page.left, top), page.inner, page.y - top, color="#eef1f5", lw=0))
        page.page_ax.add_patch(Rectangle((page.left, top), 0.05, page.y - top, color="#455a64", lw=0))
    page.y += 0.06
    page.text(r.headline, 1.12, bold=True, after=0.03)
    for note in r.data_notes:
        page.text(note, 0.85, colour=MUTED)


def _stats(page: _Page, r: NightReport) -> None:
    page.heading("Indices")
    cols = page.shape.stat_columns
    gap = 0.08
    cell_w = (page.inner - gap * (cols - 1)) / cols
    for row_start in range(0, len(r.stats), cols):
        row = r.stats[row_start : row_start + cols]
        top = page.y
        bottoms = []
        for k, stat in enumerate(row):
            page.y = top + 0.05
            x = page.left + k * (cell_w + gap) + 0.07
            page.text(stat.label, 0.82, x=x, width=cell_w - 0.12, after=0.0)
            page.text(stat.value, 1.45, bold=True, colour=RED if stat.high else INK, x=x, width=cell_w - 0.12, after=0)
            page.text(stat.note, 0.72, colour=MUTED, x=x, width=cell_w - 0.12, after=0.05)
            bottoms.append(page.y)
        if page.draw:
            from matplotlib.patches import FancyBboxPatch

            for k, stat in enumerate(row):
                page.page_ax.add_patch(
                    FancyBboxPatch(
                        (page.left + k * (cell_w + gap), top),
                        cell_w,
                        max(bottoms) - top,
                        boxstyle="round,pad=0,rounding_size=0.05",
                        fc="none",
                        ec=RED if stat.high else LINE,
                        lw=0.9,
                    )
                )
        page.y = max(bottoms) + gap
    tonight = r.history[-1].plm_index if r.history else None
    if tonight is not None:
        _gauge(page, tonight)


def _gauge(page: _Page, value: float) -> None:
    """Tonight's PLM index as one bar against the 15/h line."""
    ax = page.axes(0.5, pad_left=0.9, pad_bottom=0.2)
    if ax is None:
        return
    top = max(value, PLM_THRESHOLD) * 1.25
    ax.barh([0], [value], height=0.6, color=RED if value > PLM_THRESHOLD else BLUE)
    ax.axvline(PLM_THRESHOLD, color=RED, ls=(0, (4, 3)), lw=1.1)
    ax.text(PLM_THRESHOLD, 0.42, f" {PLM_THRESHOLD:g}/h", color=RED, fontsize=page.pt(0.78), va="bottom")
    ax.text(value, 0, f" {value:.1f}/h", va="center", fontsize=page.pt(0.85), fontweight="bold", color=INK)
    ax.set_xlim(0, top)
    ax.set_ylim(-0.5, 0.9)
    ax.set_yticks([0], ["PLM index"])
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0, labelsize=page.pt(0.85))


def _timeline(page: _Page, r: NightReport) -> None:
    page.heading("Timeline")
    if r.start_s is None or r.end_s is None or r.end_s <= r.start_s:
        page.text("No recording times for a timeline.", 0.9, colour=MUTED)
        return
    tl = timeline_of(r)
    # the HTML's lanes in its proportions (px there, data units here; y grows downwards like the page)
    series_h, leg_gap, lane_gap = 7, 9, 2
    lane_y: dict[tuple[str, str], float] = {}
    y = series_h
    for side in ("left", "right"):
        y += leg_gap
        for lane in LANES:
            lane_y[(side, lane)] = y
            y += LANE_PX[lane] + lane_gap
    base = y - lane_gap
    pad_left = 0.62  # inches for the leg and lane names
    ax = page.axes(1.55, pad_left=pad_left)
    if ax is not None:
        from matplotlib.patches import Rectangle

        span = r.end_s - r.start_s
        px = span / TIMELINE_WIDTH  # seconds per HTML pixel: marks keep the HTML's minimum widths
        ax.set_xlim(r.start_s, r.end_s)
        ax.set_ylim(base + 1, -1)
        for s0, s1, _count in tl.series:
            ax.add_patch(Rectangle((s0, 0), max(s1 - s0, px), series_h, color=SERIES_COLOUR, lw=0))
        for (_side, lane), ly in lane_y.items():
            ax.add_patch(Rectangle((r.start_s, ly), span, LANE_PX[lane], color=LANE_COLOUR, lw=0, zorder=0))
        for s0, s1 in r.out_of_bed:  # movements there are shown, not counted as LMs of the night
            top = series_h + leg_gap
            ax.add_patch(Rectangle((s0, top), s1 - s0, base - top, color=OUT_OF_BED_FILL, alpha=0.55, lw=0, zorder=1))
        for side, s0, s1 in r.nonwear:  # that leg's sensor lay on a table: nothing measured there
            y0 = lane_y[(side, LANES[0])]
            y1 = lane_y[(side, LANES[-1])] + LANE_PX[LANES[-1]]
            ax.add_patch(Rectangle((s0, y0), s1 - s0, y1 - y0, color=NONWEAR_FILL, alpha=0.6, lw=0, zorder=1))
        bars: dict[str, list[tuple[float, float, float, float]]] = {}
        for key, marks in tl.lanes.items():
            ly, lh = lane_y[key], LANE_PX[key[1]]
            for m in marks:
                if tl.dense:  # a column per minute, as tall as the movements started in it
                    h = lh * density_height(m.count)
                    bars.setdefault(m.colour, []).append((m.start, max(m.end - m.start, px), ly + lh - h, h))
                else:
                    bars.setdefault(m.colour, []).append(
                        (m.start, max(m.end - m.start, MIN_MARK_PX * px), ly + 1, lh - 2)
                    )
        for colour, rects in bars.items():
            from matplotlib.collections import PolyCollection

            verts = [[(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)] for x0, w, y0, h in rects]
            ax.add_collection(PolyCollection(verts, facecolors=colour, edgecolors="none", zorder=3))
        first = math.ceil(r.start_s / 3600) * 3600
        ticks = list(range(int(first), int(r.end_s) + 1, 3600))
        ax.set_xticks(ticks, [_clock(t, r.tz) for t in ticks])
        ax.grid(axis="x", color="#99a", lw=0.5)
        ax.set_axisbelow(False)
        labels = {series_h / 2: "PLM series"}
        for (_side, lane), ly in lane_y.items():
            labels[ly + LANE_PX[lane] / 2] = LANE_LABELS[lane]
        ax.set_yticks(list(labels), list(labels.values()))
        ax.tick_params(axis="y", length=0, labelsize=page.pt(0.62), labelcolor=MUTED, pad=1)
        for side in ("left", "right"):
            mid = (lane_y[(side, LANES[0])] + lane_y[(side, LANES[-1])] + LANE_PX[LANES[-1]]) / 2
            ax.annotate(  # at the page's left margin, whatever the page's width
                side,
                (0, mid),
                xycoords=ax.get_yaxis_transform(),
                xytext=(-pad_left * page.scale * 72, 0),
                textcoords="offset points",
                ha="left",
                va="center",
                fontsize=page.pt(0.85),
                fontweight="bold",
                color=INK,
            )
        ax.spines["left"].set_visible(False)
    _legend(page, r)
    page.text(timeline_note(tl), 0.78, colour=MUTED)


def _legend(page: _Page, r: NightReport) -> None:
    size = page.pt(0.8)
    box = size / 72 * 0.8
    x, line_h = page.left + 0.45 * page.scale, size * 1.5 / 72
    page.y += 0.02
    for label, colour in legend_of(r):
        w = box + 0.05 + page.width_of(label, size) + 0.18
        if x + w > page.left + page.inner:
            x, page.y = page.left + 0.45 * page.scale, page.y + line_h
        if page.draw:
            from matplotlib.patches import Rectangle

            page.page_ax.add_patch(Rectangle((x, page.y + 0.01), box, box, color=colour, lw=0))
            page.page_ax.text(
                x + box + 0.05, page.y, label, fontsize=size, va="top", color=INK, fontfeatures=NO_LIGATURES
            )
        x += w
    page.y += line_h + 0.02


def _bars(
    page: _Page,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    height_in: float,
    threshold: float | None = None,
    line: Sequence[float | None] | None = None,
    rotate: bool = False,
) -> None:
    ax = page.axes(height_in, pad_bottom=0.42 if rotate else 0.28)
    if ax is None:
        return
    xs = list(range(len(values)))
    known = [v for v in values if v is not None] + [v for v in (line or []) if v is not None]
    top = max([*known, threshold or 0.0, 1.0]) * 1.18
    for x, v in zip(xs, values, strict=True):
        if v is None:
            ax.text(x, top * 0.02, "–", ha="center", va="bottom", color=MUTED, fontsize=page.pt(0.8))
            continue
        red = threshold is not None and v > threshold
        ax.bar(x, v, width=0.7, color=RED if red else BLUE)
        ax.text(
            x,
            v + top * 0.015,
            f"{v:.0f}",
            ha="center",
            va="bottom",
            fontsize=page.pt(0.72),
            color=INK,
            zorder=9,  # above the median line: a line across the bars never hides a number
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
        )
    if threshold is not None:
        ax.plot([-0.6, len(values) - 0.45], [threshold] * 2, color=RED, ls=(0, (4, 3)), lw=1.1)
        ax.text(
            len(values) - 0.45,
            threshold,
            f"{threshold:g}/h",
            ha="left",
            va="center",
            color=RED,
            fontsize=page.pt(0.78),
            clip_on=False,
        )
    pts = [(x, v) for x, v in zip(xs, line or [], strict=False) if v is not None]
    if pts:  # a white casing keeps the line visible across red and blue bars; a dot marks every night of it
        px = [p[0] for p in pts] if len(pts) > 1 else [pts[0][0] - 0.4, pts[0][0] + 0.4]
        py = [p[1] for p in pts] if len(pts) > 1 else [pts[0][1]] * 2
        ax.plot(px, py, color="white", lw=3.6, zorder=6, solid_capstyle="round")
        ax.plot(px, py, color=NAVY, lw=1.8, zorder=7)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=3.2, color=NAVY, mec="white", mew=0.6, zorder=8)
    ax.set_xticks(xs, list(labels), rotation=90 if rotate else 0)
    room = page.width_of("15/h ", page.pt(0.78)) / (page.inner / max(len(values), 1)) if threshold else 0.0
    ax.set_xlim(-0.6, len(values) - 0.4 + room)  # the threshold's label sits right of the last bar
    ax.set_ylim(0, top)
    ax.yaxis.set_major_locator(_locator())


def _locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=4, integer=True)


def _hourly(page: _Page, r: NightReport) -> None:
    page.heading("PLMs per hour")
    if not r.hourly:
        page.text("No hourly counts.", 0.9, colour=MUTED)
        return
    _bars(
        page,
        [_clock(h[0], r.tz) for h in r.hourly],
        [float(h[1]) for h in r.hourly],
        height_in=1.05,
        rotate=len(r.hourly) > 10,
    )


def _history(page: _Page, r: NightReport) -> None:
    page.heading(f"Last {len(r.history)} nights")
    narrow = page.inner < 6
    _bars(
        page,
        [f"{h.date:%d.%m}" for h in r.history],
        [h.plm_index for h in r.history],
        threshold=PLM_THRESHOLD,
        line=[h.median7 for h in r.history],
        height_in=1.35 if narrow else 1.25,
        rotate=narrow,
    )
    page.text(history_caption(r), 0.82, colour=MUTED)


def _diary(page: _Page, r: NightReport, keep: int | None) -> None:
    page.heading("Sleep diary")
    if not r.diary:
        page.text(NO_DIARY.format(command="plm note"), 0.9, colour=MUTED)
        return
    entries = r.diary if keep is None else r.diary[len(r.diary) - keep :]
    if len(entries) < len(r.diary):
        page.text(f"{len(r.diary) - len(entries)} earlier note(s) are in the HTML report.", 0.8, colour=MUTED)
    date_w = page.width_of("Wed 00 May", page.pt(0.85)) + 0.12
    tags_w = page.inner * 0.3
    note_w = page.inner - date_w - tags_w - 0.1
    for entry in entries:
        top = page.y
        page.text(f"{entry.date:%a %d %b}", 0.85, width=date_w, after=0)
        bottom = page.y
        page.y = top
        page.text(entry.text, 0.85, x=page.left + date_w, width=note_w, after=0)
        bottom = max(bottom, page.y)
        page.y = top
        page.text(", ".join(entry.tags), 0.8, colour=MUTED, x=page.left + date_w + note_w + 0.1, width=tags_w, after=0)
        page.y = max(bottom, page.y) + 0.03
        if page.draw:
            page.page_ax.plot([page.left, page.left + page.inner], [page.y - 0.015] * 2, color=LINE, lw=0.6)


def _doctor(page: _Page, r: NightReport) -> None:
    page.heading("Worth knowing before a doctor's visit")
    if r.signals:
        for signal in r.signals:
            page.text(signal, 0.9, bullet="•", after=0.05)
    else:
        page.text(NO_SIGNALS, 0.9, colour=MUTED)
    page.text(f"{DOCTOR_REASONS} {MEDICATION_NOTE}", 0.85, colour=MUTED)


def _footer(page: _Page) -> None:
    page.y += 0.06
    page.text(NOTICE, 0.8, colour=MUTED, after=0)


def _lay_out(page: _Page, r: NightReport, keep_diary: int | None) -> float:
    _header(page, r)
    _stats(page, r)
    _timeline(page, r)
    _hourly(page, r)
    _history(page, r)
    _diary(page, r, keep_diary)
    _doctor(page, r)
    _footer(page)
    return page.y + page.shape.margin_in


def _fit(shape: PageShape, r: NightReport) -> tuple[float, float, int | None]:
    """(scale, page height, diary entries kept): the phone page grows; A4 shrinks type, then drops
    the oldest diary notes, until the content fits."""
    if shape.height_in is None:
        return 1.0, _lay_out(_Page(shape, 1.0), r, None), None
    for keep in [None, *range(len(r.diary) - 1, -1, -1)]:
        for scale in (1.0, 0.95, 0.9, 0.85, 0.8, 0.76, 0.72):
            if _lay_out(_Page(shape, scale), r, keep) <= shape.height_in:
                return scale, shape.height_in, keep
    return 0.72, shape.height_in, 0


def render_figure(report: NightReport, fmt: str = "png") -> Any:
    """The report as a matplotlib Figure (one page) shaped for ``fmt`` ('png' phone page, 'pdf' A4)."""
    if fmt not in PAGES:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)} or html")
    matplotlib = _matplotlib()
    from matplotlib.figure import Figure  # not pyplot: no global figure state, nothing to close

    shape = PAGES[fmt]
    scale, height, keep = _fit(shape, report)
    fig = Figure(figsize=(shape.width_in, height), dpi=shape.dpi)
    fig.patch.set_facecolor("white")
    with matplotlib.rc_context(RC):
        _lay_out(_Page(shape, scale, fig, height), report, keep)
    return fig


def render_bytes(report: NightReport, fmt: str) -> bytes:
    """PNG or PDF bytes. PDF text is embedded as TrueType text (fonttype 42): searchable, copyable."""
    fig = render_figure(report, fmt)
    matplotlib = _matplotlib()
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        metadata = {"Title": f"Night report {report.night:%Y-%m-%d} – {report.subject}", "Creator": "plm report"}
        if fmt == "png":
            metadata = {"Title": metadata["Title"], "Software": "plm report"}
        with _quiet_font_subsetting():
            fig.savefig(buf, format=fmt, dpi=fig.dpi, metadata=metadata)
    return _palette_png(buf.getvalue(), metadata) if fmt == "png" else buf.getvalue()


@contextlib.contextmanager
def _quiet_font_subsetting() -> Any:
    """matplotlib subsets the embedded fonts of a PDF with fontTools, which logs about a hundred INFO lines
    ("GSUB pruned", ...) per page; with the CLI's INFO logging they would bury the one line that matters."""
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _palette_png(data: bytes, metadata: dict[str, str]) -> bytes:
    """256 colours are plenty for a chart page and make the PNG a third the size (quick to send from a
    phone). Pillow comes with matplotlib."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256).save(out, "PNG", optimize=True, pnginfo=info)
    return out.getvalue()


def write_report(report: NightReport, path: Path) -> None:
    """Write ``path`` as PNG or PDF, chosen by its suffix."""
    fmt = Path(path).suffix.lower().lstrip(".")
    Path(path).write_bytes(render_bytes(report, fmt))
