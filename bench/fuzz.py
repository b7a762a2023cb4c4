"""Mutation fuzzing of every parser that meets outside bytes (issue 9, part 2).

Each target takes bytes and either returns a value or raises one of its *documented* error types;
anything else (IndexError, struct.error, OverflowError, a numpy error, a hang...) is a crash. Inputs
are valid seeds mutated byte-wise (flips, inserts, deletes, splices, interesting values, truncation)
plus a share of pure random bytes: mutating valid seeds reaches the deep branches that random bytes
never pass the header checks for.

    python -m bench.fuzz                 # >= 100,000 inputs per parser (the bench run)
    python -m bench.fuzz -n 2000 --only wire.decode.binary

The CI version (tests/test_fuzz_parsers.py) runs the same targets with a small fixed budget and adds
hypothesis strategies for structured inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collector import polar_pmd as pmd
from collector import witmotion as wit
from collector.testing import encode_acc_frame, encode_wit_packet
from detector.recordings.csvio import CsvError, read_leg_csv
from detector.storage.diary import DiaryError, parse_diary_payload
from plm import wire
from plm.config import ConfigError, load_settings
from plm.score_events_cli import InputError, read_events, read_gaps

NOW_NS = 1_700_000_000 * 10**9


@dataclass
class Target:
    """One parser: ``call(data)`` runs it; ``allowed`` are the documented error types."""

    name: str
    call: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: list[bytes]
    max_len: int = 4096


@dataclass
class FuzzResult:
    name: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    crashes: list[tuple[bytes, str]] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- seeds


def _batches() -> list[wire.SampleBatch]:
    rng = np.random.default_rng(7)
    out = []
    for n, rate in ((1, 52.0), (7, 50.0), (52, 52.0), (260, 104.0)):
        xyz = np.round(rng.normal(0, 0.3, (n, 3)) + np.array([0.0, 0.0, 1.0]), 3)
        out.append(wire.make_batch(NOW_NS - 10**9, rate, xyz, seq=n, now_ns=NOW_NS))
    return out


def _pmd_frames() -> list[bytes]:
    rng = np.random.default_rng(3)
    milli_g = np.cumsum(rng.integers(-40, 40, (71, 3)), axis=0) + np.array([0, 0, 1000])
    return [
        encode_acc_frame(536_457_600 * 10**9, milli_g, compressed=True),
        encode_acc_frame(536_457_600 * 10**9, milli_g[:10], compressed=False),
    ]


def _decode_frame(data: bytes) -> object:
    frame = pmd.decode_frame(data)
    values = frame.milli_g() if callable(getattr(frame, "milli_g", None)) else frame.milli_g
    arr = np.asarray(values)
    assert arr.ndim == 2 and arr.shape[1] == 3, f"frame decoded to shape {arr.shape}"
    return frame


def _control(data: bytes) -> object:
    """A stream of indications separated by 0xFF 0xFE: the assembler must survive any sequence."""
    assembler = pmd.ResponseAssembler()
    out = []
    for packet in data.split(b"\xff\xfe"):
        with contextlib.suppress(pmd.PmdProtocolError):
            out.append(assembler.feed(packet))
    return out


def _control_single(data: bytes) -> object:
    return pmd.ResponseAssembler().feed(data)


def _wit_reader(data: bytes) -> object:
    reader = wit.PacketReader()
    total = 0
    for i in range(0, len(data), 20):  # notification-sized chunks
        got = reader.feed(data[i : i + 20])
        assert got.ndim == 2 and got.shape[1] == 9
        total += got.shape[0]
    assert reader.packets == total
    return total


def _decode_wire(data: bytes) -> object:
    batch = wire.decode(data, now_ns=NOW_NS)
    assert batch.xyz.shape == (batch.count, 3) and np.isfinite(batch.xyz).all()
    assert 1 <= batch.count <= wire.MAX_SAMPLES_PER_BATCH
    ts = batch.timestamps_s()
    assert ts.shape == (batch.count,) and np.isfinite(ts).all()
    return batch


def _decode_status(data: bytes) -> object:
    status = wire.decode_status(data)
    assert status.state in wire.SENSOR_STATES
    return status


def _decode_ack(data: bytes) -> object:
    until = wire.decode_ack(data)
    assert isinstance(until, int) and 0 <= until < 2**63
    return until


class _FileTarget:
    """Parsers that read files: write the input to one reused temp file, then parse it."""

    def __init__(self, suffix: str, parse: Callable[[Path], object]) -> None:
        self.dir = tempfile.mkdtemp(prefix="plm-fuzz-")
        self.path = Path(self.dir) / f"input{suffix}"
        self.parse = parse

    def __call__(self, data: bytes) -> object:
        self.path.write_bytes(data)
        return self.parse(self.path)


def _csv_check(path: Path) -> object:
    t, xyz = read_leg_csv(path)
    assert t.ndim == 1 and xyz.shape == (t.shape[0], 3)
    assert np.isfinite(t).all() and np.isfinite(xyz).all() and (np.diff(t) > 0).all()
    return t


def _config(path: Path) -> object:
    return load_settings(path)


CSV_SEED = b"t,x,y,z\n1700000000.000,0.010,-0.020,0.998\n1700000000.019,0.011,-0.021,1.001\n" + b"".join(
    f"{1700000000.04 + i * 0.019:.3f},{0.01 * (i % 7):.3f},-0.020,{1 + 0.001 * i:.3f}\n".encode() for i in range(8)
)

CONFIG_SEEDS = [
    b'[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nusername = "detector"\npassword = "pw"\n'
    b'[influx]\nurl = "http://127.0.0.1:8086"\napi = 1\nbucket = "plm"\n'
    b'[detector]\nrules = "wasm2016"\nreorder_window_s = 5\n',
    b'[[subjects]]\nid = "alice"\n[[subjects.sensors]]\nid = "left-ankle"\nside = "left"\n'
    b'driver = "polar_pmd"\naddress = "A0:9E:1A:00:00:01"\n'
    b'[[subjects.sensors]]\nid = "right-ankle"\nside = "right"\n',
    b'[influx]\nurl = "https://influx.example:8086"\napi = 2\norg = "home"\ntoken = "t0k"\n',
]


def targets() -> list[Target]:
    batches = _batches()
    status_seeds = [
        wire.encode_status(wire.SensorStatus(state="online", side="left", battery_pct=80, rssi_dbm=-60)),
        wire.encode_status(wire.SensorStatus(state="offline")),
        b'{"state":"online","side":"right","rate_hz":52.0,"queue_depth":3,"gaps":1,"last_error":null}',
    ]
    pmd_frames = _pmd_frames()
    wit_stream = b"".join(encode_wit_packet(np.array([100 * i, -50, 2048])) for i in range(6))
    return [
        Target("wire.decode.binary", _decode_wire, (wire.WireFormatError,), [wire.encode_binary(b) for b in batches]),
        Target("wire.decode.json", _decode_wire, (wire.WireFormatError,), [wire.encode_json(b) for b in batches[:3]]),
        Target("wire.decode_status", _decode_status, (wire.WireFormatError,), status_seeds),
        Target("wire.decode_ack", _decode_ack, (wire.WireFormatError,), [wire.encode_ack(1_700_000_000 * 10**9)]),
        Target("polar.decode_frame", _decode_frame, (pmd.PmdProtocolError,), pmd_frames),
        Target(
            "polar.control_response",
            _control_single,
            (pmd.PmdProtocolError,),
            [bytes([0xF0, 0x01, 0x02, 0x00, 0x00]) + bytes.fromhex("00 01 34 00 01 01 10 00"), b"\x01\x02"],
        ),
        Target(
            "polar.control_stream",
            _control,
            (),
            [
                bytes([0xF0, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0x34])
                + b"\xff\xfe"
                + bytes([0xF0, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01])
            ],
        ),
        Target(
            "polar.parse_settings",
            pmd.parse_settings,
            (pmd.PmdProtocolError,),
            [bytes.fromhex("00 01 34 00 01 01 10 00 02 01 08 00 04 01 03")],
        ),
        Target("polar.parse_features", pmd.parse_features, (pmd.PmdProtocolError,), [bytes([0x0F, 0x6E])]),
        Target("witmotion.PacketReader", _wit_reader, (), [wit_stream]),
        Target("witmotion.decode_packet", wit.decode_packet, (ValueError,), [wit_stream[:20]]),
        Target("csv.read_leg_csv", _FileTarget(".csv", _csv_check), (CsvError,), [CSV_SEED]),
        Target(
            "score_events.read_events",
            _FileTarget(".csv", read_events),
            (InputError,),
            [b"onset,duration,side\n0,2,left\n20,2,right\n40.5,2,LEFT\n"],
        ),
        Target("score_events.read_gaps", _FileTarget(".csv", read_gaps), (InputError,), [b"start,end\n30,35\n"]),
        Target("config.load_settings", _FileTarget(".toml", _config), (ConfigError,), CONFIG_SEEDS),
        Target(
            "diary.parse_diary_payload",
            parse_diary_payload,
            (DiaryError,),
            [
                b'{"text":"caffeine after 6 pm","tags":["caffeine"],"time":"2024-03-01T21:30:00+01:00"}',
                b"slept badly #stress",
                b'"quoted words"',
                b'{"tags":["alcohol"],"time":1709325000}',
            ],
        ),
    ]


# ----------------------------------------------------------------------------- mutation

INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"-", b"1e999",
               b"nan", b"inf", b"\"", b"[", b"{", b"}", b",", b"\n", b"\r\n", b"\xef\xbb\xbf", b"\\u0000",
               b"99999999999999999999", b"-0", b"0x10", b"\xc3\x28", b"[[", b"]]", b"=", b"'"]  # fmt: skip


def mutate(rng: random.Random, data: bytes, seeds: list[bytes], max_len: int) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5, 8))):
        op = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = min(pos, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # random byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3 and buf:  # delete a run
            del buf[pos : pos + rng.randrange(1, 17)]
        elif op == 4:  # interesting token
            token = rng.choice(INTERESTING)
            if rng.random() < 0.5:
                buf[pos:pos] = token
            else:
                buf[pos : pos + len(token)] = token
        elif op == 5:  # truncate
            del buf[pos:]
        elif op == 6:  # splice with another seed
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif op == 7 and buf:  # duplicate a chunk
            end = min(len(buf), pos + rng.randrange(1, 64))
            buf[pos:pos] = buf[pos:end] * rng.randrange(1, 4)
        elif op == 8 and len(buf) >= 4:  # overwrite a little-endian integer with an edge value
            i = rng.randrange(len(buf) - 3)
            buf[i : i + 4] = rng.choice((0, 1, 2**31 - 1, 2**31, 2**32 - 1, 255, 256)).to_bytes(4, "little")
    return bytes(buf[:max_len])


def inputs(target: Target, n: int, seed: int):
    """Yield ``n`` inputs: the seeds, then mutants (of seeds and of accepted mutants), then ~5 % random."""
    rng = random.Random(f"{seed}:{target.name}")
    corpus = list(target.seeds)
    yield from corpus[:n]
    for _ in range(max(0, n - len(corpus))):
        if rng.random() < 0.05:
            yield rng.randbytes(rng.randrange(0, 64))
        else:
            yield mutate(rng, rng.choice(corpus), target.seeds, target.max_len)


def run_target(target: Target, n: int, seed: int = 0, max_crashes: int = 5) -> FuzzResult:
    result = FuzzResult(target.name)
    start = time.perf_counter()
    for data in inputs(target, n, seed):
        result.inputs += 1
        try:
            target.call(data)
            result.accepted += 1
        except target.allowed:
            result.rejected += 1
        except Exception as exc:  # anything undocumented is the finding
            if len(result.crashes) < max_crashes:
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                result.crashes.append((data, tb))
            else:
                result.crashes.append((b"", ""))
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def clean_config_env():
    """load_settings also reads PLM_* variables: fuzz the file, not this shell's environment."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PLM_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def _as_dict(r: FuzzResult) -> dict[str, object]:
    return {"name": r.name, "inputs": r.inputs, "accepted": r.accepted, "rejected": r.rejected,
            "crashes": len(r.crashes), "seconds": round(r.seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--inputs", type=int, default=100_000, help="inputs per parser (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="run only targets whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the totals here")
    args = parser.parse_args(argv)
    results = []
    with clean_config_env():
        for target in targets():
            if args.only and args.only not in target.name:
                continue
            r = run_target(target, args.inputs, args.seed)
            results.append(r)
            print(
                f"{r.name:28} {r.inputs:>8} inputs  {r.accepted:>7} accepted  {r.rejected:>7} rejected  "
                f"{len(r.crashes):>3} crashes  {r.seconds:6.1f} s",
                flush=True,
            )
            for data, tb in r.crashes[:3]:
                print(f"    CRASH {tb}\n      input {data[:120]!r}", flush=True)
    total = sum(r.inputs for r in results)
    crashes = sum(len(r.crashes) for r in results)
    print(f"total: {total} inputs over {len(results)} parsers, {crashes} crashes")
    if args.json:
        args.json.write_text(json.dumps([_as_dict(r) for r in results], indent=1))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
