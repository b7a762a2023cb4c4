"""Reading one leg's CSV (``t,x,y,z``; t in seconds, x/y/z in g; ``.csv.gz`` accepted), strictly.

Fast path: plain decimal numbers (``-0.019``, ``1689719400.013``; what sensors and our own writers
emit) are parsed by numpy array operations over the file's bytes, ~0.2 s for an 8-h 52 Hz leg of
1.5 M rows, with no extra import. The values are correctly rounded, the same doubles as Python's
``float()``. Anything else (exponents, spaces, quotes, a malformed line) goes to a general parser:
pandas' C parser when pandas is installed (the ``fast-csv`` extra), else ``np.loadtxt``. Either
way the result is checked (field count, every value finite); only when a parse or a check fails is
the file scanned line by line to name the first bad line, so errors cost time and good files do not.
"""

from __future__ import annotations

import gzip
import importlib
import io
import math
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


class CsvError(ValueError):
    """A bad input file; the message names the file, the line (1-based) and the problem."""


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
    newline = raw.find(b"\n")
    header_line = (raw if newline < 0 else raw[:newline]).decode("utf-8", "replace").strip().lstrip("\ufeff")
    names = [h.strip().lower() for h in header_line.split(",")]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise CsvError(
            f"{path}: line 1: header {header_line!r} lacks column(s) {', '.join(missing)} (expected t,x,y,z)"
        )
    order = [names.index(c) for c in COLUMNS]
    body_start = len(raw) if newline < 0 else newline + 1
    parsed = _parse_plain(raw, body_start, len(names), order)
    if parsed is None:
        t, xyz = _parse_general(path, raw[body_start:], len(names), order)
    else:
        t, xyz = parsed
    _check_samples(path, t, xyz)
    return t, xyz


def _check_samples(path: Path, t: np.ndarray, xyz: np.ndarray) -> None:
    """Strictly increasing time and values in g, not m/s^2: the errors name the first offending line."""
    if t.shape[0] > 1:
        bad = np.flatnonzero(t[1:] <= t[:-1])  # finite values: the same as diff <= 0, without the diff array
        if bad.size:
            row = int(bad[0]) + 1
            what = "duplicate" if t[row] == t[row - 1] else "unsorted (earlier than the line before)"
            raise CsvError(f"{path}: line {row + 2}: {what} timestamp t={t[row]!r}")
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
            raise CsvError(f"{path}: line {number}: expected {width} comma-separated values, found {len(fields)}")
        for column in order:
            value = fields[column].strip()
            try:
                number_value = float(value)
            except ValueError:
                raise CsvError(
                    f"{path}: line {number}: column {COLUMNS[order.index(column)]} is not a number: {value!r}"
                ) from None
            if not math.isfinite(number_value):
                raise CsvError(f"{path}: line {number}: value is NaN or infinite")
    raise CsvError(f"{path}: cannot parse the file as CSV numbers")
