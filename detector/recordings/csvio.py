"""Reading one leg's CSV (``t,x,y,z``; t in seconds, x/y/z in g; ``.csv.gz`` accepted), strictly.

Fast path: plain decimal numbers (``-0.019``, ``1689719400.013``; what sensors and our own writers
emit) are parsed by numpy array operations over the file's bytes, ~0.2 s for an 8-h 52 Hz leg of
1.5 M rows, with no extra import. The values are correctly rounded, the same doubles as Python's
``float()``. Anything else (exponents, spaces, quotes, a malformed line) goes to a general parser:
pandas' C parser when pandas is installed (the ``fast-csv`` extra), else ``np.loadtxt``. Either
way the result is checked (field count, every value finite); only when a parse or a check fails is
the file scanned line by line to name the first bad line, so errors cost time and good files do not.

Spreadsheets in many locales write ``;`` (and ``,`` as the decimal mark) or tabs: such a file is read
when its header says so and its numbers cannot be misread (see :func:`_other_separator`); otherwise the
error says which separator it saw. A binary file is named with a short excerpt, not its bytes.

:func:`check_recording` and :func:`check_legs` then judge what was read as a whole: a recording that
cannot be scored right (too short, relative or out-of-range times, legs from different nights or the
same leg twice) is refused with the fix, because a confident wrong number is worse than none (issue 18).
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib
import io
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

COLUMNS = ("t", "x", "y", "z")
_NON_SPACE = re.compile(rb"\S")

_NEWLINE, _COMMA, _MINUS, _DOT_BYTE = b"\n,-."
_MAX_FIELD = 18  # characters (sign, digits, dot): longer fields go to the general parser
_LOOK_BACK = 24  # bytes read before a field's end: three 8-byte words
_BLOCK_ROWS = 1 << 14  # rows per block of the fast parser: its temporaries (128 KB) stay in the CPU cache
_EXACT = 2**53  # integers below this are exact doubles, so digits / 10**k is correctly rounded
_POW10_INT = 10 ** np.arange(19, dtype=np.int64)
_POW10_FLOAT = 10.0 ** np.arange(19)  # exact doubles up to 1e22


# what a recording must be to be scored (see check_recording and check_legs)
MIN_DATA_S = 600.0  # 10 minutes of samples: less gives an index over minutes that reads like a night's
DATA_GAP_S = 5.0  # a pause between samples longer than this is missing data, not recorded time (series_gap_s)
MAX_RECORDING_S = 36 * 3600.0  # one night; longer is several nights or a clock error (score one night at a time)
CLOCK_TIME_FROM_S = 946_684_800.0  # 2000-01-01: earlier t are seconds from the recording's start, not clock times
MAX_TIME_S = 4_102_444_800.0  # 2100-01-01: no clock time of a recording is later
MIN_OVERLAP = 0.5  # two legs must be recorded together for at least half of the shorter one
SAME_SIGNAL_CORRELATION = 0.9  # sample-to-sample changes this alike are one sensor's signal (two legs: ~0)
_SIMILARITY_SAMPLES = 100_000  # compared at this many points, spread over the overlap


class CsvError(ValueError):
    """A bad input file; the message names the file, the line (1-based) and the problem."""


def _excerpt(text: str | bytes, limit: int = 40) -> str:
    """``repr`` of at most ``limit`` characters of ``text``: enough to recognise a file, never its whole body."""
    cut = text[:limit]
    return repr(cut) + ("..." if len(text) > limit else "")


def _open_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CsvError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise CsvError(f"{path}: not a valid gzip file: {exc}") from None
    return raw


def read_leg_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return ``t`` (n,) float64 seconds and ``xyz`` (n, 3) float64 g; :class:`CsvError` on bad input."""
    path = Path(path)
    raw = _open_bytes(path)
    if _NON_SPACE.search(raw) is None:
        raise CsvError(f"{path}: file is empty (expected a header line 't,x,y,z' and samples)")
    if b"\0" in raw[:4096]:
        raise CsvError(f"{path}: not a text file (it starts with {_excerpt(raw, 16)}); expected CSV lines t,x,y,z")
    newline = raw.find(b"\n")
    header_line = (raw if newline < 0 else raw[:newline]).decode("utf-8", "replace").strip().lstrip("\ufeff")
    names = [h.strip().lower() for h in header_line.split(",")]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        converted = _other_separator(path, raw, header_line)
        if converted is None:
            raise CsvError(
                f"{path}: line 1: header {_excerpt(header_line, 60)} lacks column(s) {', '.join(missing)} "
                f"(expected t,x,y,z){_separator_hint(header_line)}"
            )
        raw = converted
        newline = raw.find(b"\n")
        header_line = (raw if newline < 0 else raw[:newline]).decode("utf-8", "replace").strip().lstrip("\ufeff")
        names = [h.strip().lower() for h in header_line.split(",")]
    order = [names.index(c) for c in COLUMNS]
    body_start = len(raw) if newline < 0 else newline + 1
    if not raw[body_start:].strip(b"\r\n"):  # before numpy, which would warn "input contained no data"
        raise CsvError(f"{path}: no samples after the header")
    parsed = _parse_plain(raw, body_start, len(names), order)
    if parsed is None:
        t, xyz = _parse_general(path, raw[body_start:], len(names), order)
    else:
        t, xyz = parsed
    _check_samples(path, t, xyz)
    return t, xyz


_SEPARATORS = {";": "semicolons (;)", "\t": "tabs", "|": "'|'", " ": "spaces"}


def _separator_hint(header: str) -> str:
    for separator, name in _SEPARATORS.items():
        names = [h.strip().lower() for h in header.split(separator)]
        if all(c in names for c in COLUMNS):
            return f"; the header is separated by {name}, not commas: write the file with ',' between values"
    return ""


def _other_separator(path: Path, raw: bytes, header: str) -> bytes | None:
    """The file with commas between values, if its header uses ``;`` or tabs and its numbers are unambiguous.

    ``;`` comes with either decimal mark: ``.`` (read as is) or ``,`` (read as ``.``, when the file has no
    ``.`` at all, so a ``,`` cannot be a thousands separator). A tab file must use ``.``. Anything else is
    refused by the caller with the separator it saw."""
    for separator in (";", "\t"):
        names = [h.strip().lower() for h in header.split(separator)]
        if not all(c in names for c in COLUMNS) or "," in header:
            continue
        sep = separator.encode()
        if b"," in raw:
            if separator != ";" or b"." in raw:
                raise CsvError(
                    f"{path}: values are separated by {_SEPARATORS[separator]} and the numbers mix ',' and '.'; "
                    "write plain numbers with '.' as the decimal mark"
                )
            raw = raw.replace(b",", b".")  # the decimal mark: nothing else in the file can be a comma
        return raw.replace(sep, b",")
    return None


def _check_samples(path: Path, t: np.ndarray, xyz: np.ndarray) -> None:
    """Strictly increasing time and values in g, not m/s^2: the errors name the first offending line."""
    if t.shape[0] > 1:
        bad = np.flatnonzero(t[1:] <= t[:-1])  # finite values: the same as diff <= 0, without the diff array
        if bad.size:
            row = int(bad[0]) + 1
            what = "duplicate" if t[row] == t[row - 1] else "unsorted (earlier than the line before)"
            raise CsvError(f"{path}: line {row + 2}: {what} timestamp t={float(t[row])!r}")
    magnitude = _median_norm(xyz)
    if not 0.5 <= magnitude <= 1.5:
        hint = "values look like m/s^2" if 5 <= magnitude <= 15 else "values are not in g"
        raise CsvError(f"{path}: {hint} (median |a| = {magnitude:.3g}); expected g, where a still sensor reads 1")


def _median_norm(xyz: np.ndarray) -> float:
    """``median(|a|)``, from the squared norms (no square root of every row; same value as np.median)."""
    squares = np.einsum("ij,ij->i", xyz, xyz)
    n = squares.shape[0]
    squares.partition([(n - 1) // 2, n // 2])  # in place: squares is ours
    middle = squares[[(n - 1) // 2, n // 2]]
    return float(np.mean(np.sqrt(middle)))


# --------------------------------------------------------------------------------- fast path
def _parse_plain(raw: bytes, offset: int, width: int, order: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
    """``t`` and ``xyz`` from the body ``raw[offset:]`` if every line is ``width`` plain decimals, else None.

    Plain means ``[-]digits[.digits]`` (or ``[-].digits``), at most 18 characters and 15 digits,
    nothing else, lines ending in ``\\n`` (or ``\\r\\n``). The bytes are one uint8 array: the
    separators give each field's end and start; each field is then read as up to three 8-byte words
    ending at its end and handled 8 characters at a time in uint64 arithmetic (the SWAR digit checks
    and 8-digit conversion of fast_float), giving its digits as one integer ``M`` and the value
    ``M / 10**decimals``: two exact doubles divided, so correctly rounded, the same double as ``float()``."""
    if b"\r" in raw:
        offset -= raw.count(b"\r\n", 0, offset)
        raw = raw.replace(b"\r\n", b"\n")  # a lone \r remains and sends the file to the general parser
    if not raw.endswith(b"\n"):
        raw += b"\n"
    buf = np.frombuffer(raw, dtype=np.uint8)
    # every byte below '-' (45) ends a field: ',' and '\n' do; any other (space, tab, quote, '+', \r ...)
    # ends one too, so the line structure check below fails and the general parser takes the file
    ends = np.flatnonzero(buf[offset:] < _MINUS)
    if ends.shape[0] == 0 or ends.shape[0] % width:
        return None
    ends += offset
    rows = ends.shape[0] // width
    separators = buf[ends].reshape(rows, width)
    if not ((separators[:, -1] == _NEWLINE).all() and (separators[:, :-1] == _COMMA).all()):
        return None
    line_ends = ends[width - 1 :: width]
    line_starts = np.empty(rows, dtype=np.int64)
    line_starts[0] = offset
    line_starts[1:] = line_ends[:-1] + 1
    # a field's words are read up to _LOOK_BACK bytes before its end: the first lines get a padded copy
    head_rows = int(np.searchsorted(line_starts, _LOOK_BACK))
    head = np.concatenate([np.zeros(_LOOK_BACK, dtype=np.uint8), buf[: line_ends[max(head_rows - 1, 0)] + 1]])
    words, head_words = _words_at(buf), _words_at(head)
    t = np.empty(rows, dtype=np.float64)
    xyz = np.empty((rows, 3), dtype=np.float64)
    targets = (t, xyz[:, 0], xyz[:, 1], xyz[:, 2])
    for column, target in zip(order, targets, strict=True):
        field_ends = ends[column::width]
        before = line_starts - 1 if column == 0 else ends[column - 1 :: width]  # a field starts after this
        for lo in range(0, rows, _BLOCK_ROWS):
            hi = min(lo + _BLOCK_ROWS, rows)
            starts, stops = before[lo:hi] + 1, field_ends[lo:hi]
            if lo == 0 and head_rows:  # read from the padded copy
                starts[:head_rows] += _LOOK_BACK
                head_stops = stops[:head_rows] + _LOOK_BACK
                if not _plain_values(head_words, head, starts[:head_rows], head_stops, target[:head_rows]):
                    return None
                starts, stops, target_block = starts[head_rows:], stops[head_rows:], target[head_rows:hi]
            else:
                target_block = target[lo:hi]
            if starts.shape[0] and not _plain_values(words, buf, starts, stops, target_block):
                return None
    return t, xyz


def _words_at(buf: np.ndarray) -> np.ndarray:
    """``words[i]`` = the little-endian uint64 of ``buf[i : i + 8]``: an overlapping, unaligned view, no copy."""
    return np.ndarray((max(buf.shape[0] - 7, 0),), dtype="<u8", buffer=buf, strides=(1,))


def _u64(pattern: int) -> np.uint64:
    return np.uint64(pattern * 0x0101010101010101)


_ZEROS, _DOTS, _LOW_BITS, _HIGH_BITS = _u64(0x30), _u64(0x2E), _u64(0x01), _u64(0x80)
_NIBBLES, _SIXES, _THREES = _u64(0xF0), _u64(0x06), _u64(0x33)
_KEEP = np.array([(~0 << (8 * (8 - n))) & (2**64 - 1) for n in range(9)], dtype=np.uint64)  # top n bytes
_FILL = _KEEP ^ np.uint64(2**64 - 1)
_FILL &= _ZEROS  # '0' in the bytes not kept
_AFTER_DOT = np.uint64(0x0706050403020100)


def _plain_values(words: np.ndarray, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> bool:
    """Parse the fields ``buf[starts[i]:ends[i]]`` into ``out``; False if any is not a plain decimal.

    Most files write every value of a column alike (``%.3f``): when all fields have the same number of
    decimals (and of characters), the dot and the masks are constants and most of the work drops out."""
    negative = buf[starts] == _MINUS
    chars = ends - starts - negative  # characters after the sign
    longest = int(chars.max())
    if longest > _MAX_FIELD - 1:
        return False
    first = bytes(buf[starts[0] : ends[0]])
    fixed = len(first) - 1 - first.rfind(b".") if b"." in first else None  # the decimals of a %.nf column
    if fixed is not None and not ((chars > fixed).all() and (buf[ends - (fixed + 1)] == _DOT_BYTE).all()):
        fixed = None
    uniform = int(chars.min()) == longest
    whole = np.zeros(chars.shape[0], dtype=np.int64)  # the digits, with the dot read as a digit 0
    decimals = np.zeros(chars.shape[0], dtype=np.int64)
    dots = np.zeros(chars.shape[0], dtype=np.int64)
    for k in range((longest + 7) // 8):  # word k holds characters 8k+1 .. 8k+8 from the end
        word = words[ends - 8 * (k + 1)]
        taken = min(max(longest - 8 * k, 0), 8) if uniform else np.clip(chars - 8 * k, 0, 8)
        word &= _KEEP[taken]
        word |= _FILL[taken]  # characters before the field (and the sign) read as '0'
        if fixed is None:
            flipped = word ^ _DOTS  # zero byte where a '.' is: find the lowest one ...
            found = (flipped - _LOW_BITS) & ~flipped & _HIGH_BITS
            lowest = found & (~found + np.uint64(1))
            word ^= (lowest >> np.uint64(7)) * np.uint64(0x1E)  # ... and read it as '0' (0x2E ^ 0x1E = 0x30)
            has_dot = lowest != 0
            dots += has_dot
            # a dot in byte j has 7-j characters after it in this word (and 8k in the words after): with
            # lowest = 0x80 << 8j, (lowest >> 7) * 0x0706050403020100 has 7-j in its top byte
            after = ((lowest >> np.uint64(7)) * _AFTER_DOT) >> np.uint64(56)
            decimals += np.where(has_dot, after.astype(np.int64) + 8 * k, 0)
        elif fixed // 8 == k:  # the dot, checked above, is in this word: read it as '0'
            word ^= np.uint64(0x1E << (8 * (7 - fixed % 8)))
        if not ((word & _NIBBLES) | (((word + _SIXES) & _NIBBLES) >> np.uint64(4)) == _THREES).all():
            return False  # a byte that is not a digit (nor the one '.')
        word -= _ZEROS  # fast_float's parse_eight_digits_unrolled: eight digits to one integer
        word = word * np.uint64(10) + (word >> np.uint64(8))
        word = (
            (word & np.uint64(0x000000FF000000FF)) * np.uint64(100 + (1000000 << 32))
            + ((word >> np.uint64(16)) & np.uint64(0x000000FF000000FF)) * np.uint64(1 + (10000 << 32))
        ) >> np.uint64(32)
        whole += word.astype(np.int64) * 10 ** (8 * k)
    if fixed is not None:
        if fixed == 0 and (chars == 1).any():  # "." or "-." alone: no digit
            return False
        high = whole // 10 ** (fixed + 1)  # digits before the dot (a division by a constant: multiply-shift)
        mantissa = whole - high * 10 ** (fixed + 1) + high * 10**fixed
        scale: Any = _POW10_FLOAT[fixed]
    else:
        if not ((dots <= 1).all() and (chars > dots).all()):
            return False  # two dots, or no digit at all
        low = whole % _POW10_INT[decimals]
        mantissa = np.where(dots == 1, (whole + 9 * low) // 10, whole)
        scale = _POW10_FLOAT[decimals]
    if int(mantissa.max()) >= _EXACT:
        return False
    np.divide(mantissa, scale, out=out)
    np.negative(out, out=out, where=negative)
    return True


# ------------------------------------------------------------------------------ general path
def _parse_general(path: Path, body: bytes, width: int, order: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Any CSV numbers (pandas when installed, else numpy), checked; CsvError names the first bad line."""
    data = _parse_pandas(body, width, order)
    if data is None:
        rows = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        if body.count(b",") != rows * (width - 1):  # np.loadtxt with usecols would drop extra fields silently
            _raise_first_bad_line(path, body, width, order)
        try:
            data = np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float64, ndmin=2, usecols=order)
        except ValueError:
            _raise_first_bad_line(path, body, width, order)
            raise  # unreachable: the scan always finds the line numpy choked on
    if data.shape[0] == 0:
        raise CsvError(f"{path}: no samples after the header")
    if data.shape[1] != 4:
        raise CsvError(f"{path}: expected 4 columns t,x,y,z, found {data.shape[1]}")
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        _raise_first_bad_line(path, body, width, order)  # an empty line, a missing or bad value ...
        row = int(np.flatnonzero(~finite)[0])
        raise CsvError(f"{path}: line {row + 2}: value is NaN or infinite")
    return np.ascontiguousarray(data[:, 0]), np.ascontiguousarray(data[:, 1:4])


_pandas_module: Any = None


def _pandas() -> Any:
    """pandas, imported on first use (it takes a while to import and the fast path rarely needs it), or None."""
    global _pandas_module
    if _pandas_module is None:
        try:
            _pandas_module = importlib.import_module("pandas")
        except ImportError:
            _pandas_module = False
    return _pandas_module or None


def _parse_pandas(body: bytes, width: int, order: list[int]) -> np.ndarray | None:
    """The (rows, 4) t,x,y,z array via pandas' C parser, or None (no pandas, or not a plain table).

    pandas is lenient where we are strict (it skips or pads short lines), so the shape is checked
    from the byte counts: every line must have exactly ``width - 1`` commas. Empty lines and bad
    values come out as NaN or an exception; the caller then names the line."""
    if not body.strip():
        return None
    rows = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    if body.count(b",") != rows * (width - 1):
        return None
    pd = _pandas()
    if pd is None:
        return None
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            header=None,
            usecols=order,
            dtype=np.float64,
            engine="c",
            skip_blank_lines=False,
            na_filter=False,
        )
    except (ValueError, pd.errors.ParserError):
        return None
    if frame.shape != (rows, 4):
        return None
    return frame[order].to_numpy(dtype=np.float64)


def _raise_first_bad_line(path: Path, body: bytes, width: int, order: list[int]) -> None:
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), start=2):
        if not line.strip():
            raise CsvError(f"{path}: line {number}: empty line")
        fields = line.split(",")
        if len(fields) != width:
            hint = " (a decimal comma? write '.' as the decimal mark)" if len(fields) > width else ""
            raise CsvError(f"{path}: line {number}: expected {width} comma-separated values, found {len(fields)}{hint}")
        for column in order:
            value = fields[column].strip()
            try:
                number_value = float(value)
            except ValueError:
                raise CsvError(
                    f"{path}: line {number}: column {COLUMNS[order.index(column)]} is not a number: {_excerpt(value)}"
                ) from None
            if not math.isfinite(number_value):
                raise CsvError(f"{path}: line {number}: value is NaN or infinite")
    raise CsvError(f"{path}: cannot parse the file as CSV numbers")


# --------------------------------------------------------------------------- the recording as a whole
def clock_time(t: float) -> str:
    """A Unix time as this machine's local time with its UTC offset, to the minute (``2024-02-23 22:30+01:00``)."""
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(sep=" ", timespec="minutes")


def describe_span(t: np.ndarray) -> str:
    """When a leg's samples were taken, for messages: clock times, or seconds when the times are relative."""
    first, last = float(t[0]), float(t[-1])
    if first >= CLOCK_TIME_FROM_S:
        return f"{clock_time(first)} to {clock_time(last)}"
    return f"t = {first:g} to {last:g} s (relative)"


def is_relative(t: np.ndarray) -> bool:
    """True when ``t`` counts seconds from the recording's start rather than clock (Unix) time."""
    return float(t[0]) < CLOCK_TIME_FROM_S


def check_recording(path: str | Path, t: np.ndarray) -> None:
    """Refuse one leg's timestamps when no night can be scored right from them; CsvError says why and the fix.

    Refused: times before 0 or after 2100 (by value), milliseconds, a span longer than one night, and less
    than :data:`MIN_DATA_S` of samples (a 2-sample file once printed a full summary with "PLM index 0.0").
    Relative times (from 0) pass: the caller decides, as they need a start time to be dated."""
    first, last = float(t[0]), float(t[-1])
    if first < 0:
        raise CsvError(
            f"{path}: timestamps start at t={first:g}, before 0: t must be Unix seconds or seconds from the "
            "recording's start"
        )
    if last > MAX_TIME_S:
        hint = (
            "t looks like Unix time in milliseconds: write it in seconds (divide by 1000)"
            if 1e11 <= last <= 1e14
            else "t must be Unix seconds or seconds from the recording's start"
        )
        raise CsvError(f"{path}: timestamp t={last:g} is out of range (after the year 2100); {hint}")
    steps = np.diff(t)
    if steps.shape[0]:
        step = float(np.median(steps))
        if 5.0 <= step <= 200.0:  # 5-200 Hz in ms; in seconds a sample every 5-200 s is no accelerometer file
            raise CsvError(
                f"{path}: timestamps look like milliseconds (median step {step:g} between samples): write t in "
                "seconds (divide by 1000)"
            )
    if last - first > MAX_RECORDING_S:
        raise CsvError(
            f"{path}: the samples span {(last - first) / 3600:,.1f} h ({describe_span(t)}), more than one night "
            f"({MAX_RECORDING_S / 3600:g} h at most): score one night at a time (plm import splits a multi-day "
            "recording into its nights)"
        )
    data_s = float(steps[steps <= DATA_GAP_S].sum())
    if data_s < MIN_DATA_S:
        raise CsvError(
            f"{path}: only {data_s / 60:.1f} min of samples ({t.shape[0]} sample{'s' if t.shape[0] != 1 else ''}); "
            "a recording needs at least "
            f"{MIN_DATA_S / 60:g} minutes to be scored"
        )


def check_legs(left: tuple[Path, np.ndarray, np.ndarray], right: tuple[Path, np.ndarray, np.ndarray]) -> None:
    """Refuse two legs that cannot be one night of two legs: CsvError naming both files and the fix.

    Refused: the same file twice; one file with clock times and one with relative times; legs recorded
    together for less than :data:`MIN_OVERLAP` of the shorter one (different nights once gave "recording
    146 h, missing 98.6 %, PLM index 0.0/h"); and the same signal twice (a copy, or a copy with a little
    noise: scored as two legs it turned every movement bilateral and raised the index)."""
    (left_path, lt, lx), (right_path, rt, rx) = left, right
    try:
        same_file = os.path.samefile(left_path, right_path)
    except OSError:
        same_file = False
    if same_file:
        raise CsvError(f"{left_path} is given for both legs: give each leg's own recording, or score one leg alone")
    if is_relative(lt) != is_relative(rt):
        raise CsvError(
            f"the legs' time bases differ: {left_path} covers {describe_span(lt)}, {right_path} covers "
            f"{describe_span(rt)}: write both with Unix times, or both from the recording's start"
        )
    lo, hi = max(float(lt[0]), float(rt[0])), min(float(lt[-1]), float(rt[-1]))
    shorter = min(float(lt[-1] - lt[0]), float(rt[-1] - rt[0]))
    if hi - lo < MIN_OVERLAP * shorter:
        raise CsvError(
            f"the legs were not recorded together: {left_path} covers {describe_span(lt)}, {right_path} covers "
            f"{describe_span(rt)} (together {max(hi - lo, 0) / 60:.0f} min): give two recordings of the same "
            "night, or score each leg alone"
        )
    alike = _signal_similarity(lt, lx, rt, rx, lo, hi)
    if alike >= SAME_SIGNAL_CORRELATION:
        raise CsvError(
            f"{left_path} and {right_path} hold the same signal (their sample-to-sample changes correlate "
            f"{alike:.2f}; two legs' sensors move and are read apart, ~0): give each leg's own recording, "
            "or score one leg alone"
        )


def _signal_similarity(lt: np.ndarray, lx: np.ndarray, rt: np.ndarray, rx: np.ndarray, lo: float, hi: float) -> float:
    """Correlation of the two legs' sample-to-sample changes over their common time (1.0: identical).

    Changes, not values: both legs lie in bed much alike, but each sensor's noise is its own, so two
    legs' changes correlate near 0 and only a copy of one signal (even with a little noise added) near 1.
    The right leg is interpolated at the left's sample times, at up to 100,000 points of the overlap."""
    if lt.shape == rt.shape and np.array_equal(lt, rt) and np.array_equal(lx, rx):
        return 1.0
    first, last = np.searchsorted(lt, [lo, hi], side="left")
    last = min(int(last), lt.shape[0] - 1)
    if last - first < 2:
        return 0.0
    at = np.unique(np.linspace(first, last - 1, min(_SIMILARITY_SAMPLES, last - first)).astype(np.int64))
    ours = (lx[at + 1] - lx[at]).ravel()
    theirs = np.column_stack(
        [np.interp(lt[at + 1], rt, rx[:, k]) - np.interp(lt[at], rt, rx[:, k]) for k in range(3)]
    ).ravel()
    if not (ours.std() > 0 and theirs.std() > 0):  # a still, noiseless signal (synthetic): compare the values
        values = np.column_stack([np.interp(lt[at], rt, rx[:, k]) for k in range(3)])
        return 1.0 if np.array_equal(lx[at], values) else 0.0
    return float(np.corrcoef(ours, theirs)[0, 1])
