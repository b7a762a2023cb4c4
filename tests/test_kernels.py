"""The compiled loops of detector/scoring/kernels.py against plain numpy/scipy references.

The kernels replaced scipy/numpy chains for speed; these tests pin that they compute the same numbers
(the filters bit for bit, the floors exactly) for any input and any chunking.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal as sps

from detector.scoring.kernels import epoch_sums, first_bad_sample, sample_steps
from detector.scoring.params import DetectorParams
from detector.scoring.signal import ActivityFilter, NoiseFloor, _design


def reference_chain(xyz: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The activity chain as scipy calls over the whole array (steady state on the first sample)."""
    params = DetectorParams()
    d = _design(round(rate, 4), params)
    quiet_n = max(1, round(params.quiet_lag_s * rate))

    def run(sos: np.ndarray, zi_unit: np.ndarray) -> np.ndarray:
        return sps.sosfilt(sos, xyz, axis=0, zi=zi_unit[:, :, None] * xyz[0][None, None, :])[0]

    fast = run(d.fast, d.fast_zi)
    low = run(d.low, d.low_zi)
    tremor = run(d.tremor, d.tremor_zi)
    fast_ext = np.concatenate((np.repeat(xyz[:1], quiet_n, axis=0), fast))
    low_ext = np.concatenate((np.repeat(xyz[:1], d.lag_n, axis=0), low))
    step = fast - fast_ext[: len(xyz)]
    change = low - low_ext[: len(xyz)]
    still = np.sqrt((step * step).sum(axis=1))
    norm = np.sqrt((change * change).sum(axis=1) + (tremor * tremor).sum(axis=1))
    env = sps.sosfilt(d.env, norm, zi=np.zeros((d.env.shape[0], 2)))[0]
    return env, low, fast, still


def reference_floor(env: np.ndarray, block_n: int, window: int, rank: int) -> np.ndarray:
    """Per-sample floor from whole-array numpy: rank-th smallest of the last ``window`` block medians."""
    complete = len(env) // block_n
    out = np.full(len(env), np.inf)
    if complete == 0:
        return out
    medians = np.partition(env[: complete * block_n].reshape(complete, block_n), block_n // 2, axis=1)[:, block_n // 2]
    extended = np.concatenate((np.full(window - 1, medians[0]), medians))
    floors = np.partition(sliding_window_view(extended, window), rank, axis=1)[:, rank]
    for k in range(complete):
        out[(k + 1) * block_n : (k + 2) * block_n] = floors[k]
    return out


def cut(n: int, fractions: list[float]) -> list[int]:
    return sorted({0, n, *(int(f * n) for f in fractions)})


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([25.0, 52.0, 100.0, 12.5]),
    seed=st.integers(0, 2**32 - 1),
    fractions=st.lists(st.floats(0, 1), max_size=6),
)
def test_activity_chain_equals_scipy_in_any_chunking(rate: float, seed: int, fractions: list[float]) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 600))
    xyz = np.cumsum(rng.normal(0, 0.02, (n, 3)), axis=0) + rng.normal(0, 1, 3)
    chain = ActivityFilter(rate, DetectorParams())
    bounds = cut(n, fractions)
    pieces = [chain.process(xyz[a:b]) for a, b in itertools.pairwise(bounds)]
    got = [np.concatenate([p[i] for p in pieces]) for i in range(4)]
    want = reference_chain(xyz, rate)
    for name, g, w in zip(("env", "low", "fast", "still"), got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15, err_msg=name)
    np.testing.assert_array_equal(got[1], want[1])  # the filters themselves: bit for bit
    np.testing.assert_array_equal(got[2], want[2])


@settings(max_examples=60, deadline=None)
@given(
    env=hnp.arrays(np.float64, st.integers(0, 400), elements=st.floats(0, 1, allow_subnormal=False)),
    block_n=st.integers(1, 9),
    window=st.integers(1, 12),
    quantile=st.floats(0, 1),
    fractions=st.lists(st.floats(0, 1), max_size=5),
)
def test_noise_floor_equals_numpy_reference_in_any_chunking(
    env: np.ndarray, block_n: int, window: int, quantile: float, fractions: list[float]
) -> None:
    floor = NoiseFloor(block_n, window, quantile)
    bounds = cut(len(env), fractions)
    got = np.concatenate([floor.per_sample(env[a:b]) for a, b in itertools.pairwise(bounds)] or [[]])
    np.testing.assert_array_equal(got, reference_floor(env, block_n, window, floor.rank))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), epoch_s=st.sampled_from([1.0, 30.0]))
def test_epoch_sums_match_numpy(seed: int, epoch_s: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    t = np.cumsum(rng.uniform(0.01, 2.0, n)) + rng.uniform(-100, 100)
    xyz = rng.normal(0, 1, (n, 3))
    active = rng.random(n) < 0.3
    env = rng.uniform(0, 0.1, n)
    keys, sums = epoch_sums(t, xyz, active, env, epoch_s, 10_000.0)
    epoch = np.floor(t / epoch_s).astype(np.int64)
    np.testing.assert_array_equal(keys, np.unique(epoch))
    for key, row in zip(keys, sums, strict=True):
        sel = epoch == key
        assert row[0] == sel.sum()
        np.testing.assert_array_equal(row[1:4], np.rint(xyz[sel] * 10_000).astype(np.int64).sum(axis=0))
        assert row[4] == active[sel].sum()
        assert row[5] == np.rint(env[sel] * 10_000).astype(np.int64).sum()


def test_filter_designs_come_back_from_the_disk_cache_unchanged(tmp_path, monkeypatch) -> None:
    """Designs are cached on disk so that scoring need not import scipy.signal; a cached design must be
    the designed one, a damaged cache file is designed afresh, and an unwritable cache is no error."""
    import dataclasses

    from detector.scoring import signal as sig

    params = DetectorParams()
    monkeypatch.setenv("PLM_CACHE_DIR", str(tmp_path))
    sig._design.cache_clear()
    fresh = sig._design(51.37, params)  # designs and writes
    path = sig._design_cache_path(51.37, params)
    assert path is not None and path.exists()
    sig._design.cache_clear()
    cached = sig._design(51.37, params)
    for f in dataclasses.fields(fresh):
        a, b = getattr(fresh, f.name), getattr(cached, f.name)
        assert type(a) is type(b) and np.array_equal(a, b), f.name
    path.write_bytes(b"not a design")
    sig._design.cache_clear()
    assert np.array_equal(sig._design(51.37, params).tremor, fresh.tremor)
    assert sig._design_cache_path(51.37, DetectorParams(boundary_hz=6.0)) != path  # params are in the key
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("PLM_CACHE_DIR", str(blocked))  # a file where the cache directory should be
    sig._design.cache_clear()
    assert np.array_equal(sig._design(51.37, params).low, fresh.low)
    sig._design.cache_clear()


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.sampled_from([1 / 52, 1 / 52 * 0.9, 1 / 52 * 1.6, 0.2, 1.0, 2.5, 7.0]), min_size=1, max_size=80),
    jitter=st.floats(-0.002, 0.002),
    start=st.none() | st.floats(0.0, 30.0),
)
def test_sample_steps_equals_numpy_reference(steps: list[float], jitter: float, start: float | None) -> None:
    """Missing time (integer us) and filter restarts: the compiled pass gives what the numpy expression the
    detector used before gives, for a first chunk (no previous sample) and a later one."""
    t = 1.7e9 + 40.0 + np.cumsum(np.array(steps) + jitter)
    previous = None if start is None else 1.7e9 + start
    period, hole_s, reset_s = 1 / 52, 1.5 / 52, 1.0
    ref_steps = np.empty(t.shape[0])
    ref_steps[0] = 0.0 if previous is None else t[0] - previous
    np.subtract(t[1:], t[:-1], out=ref_steps[1:])
    holes = ref_steps > hole_s
    ref_missing = int(np.rint((ref_steps[holes] - period) * 1e6).astype(np.int64).sum()) if holes.any() else 0
    missing, cuts = sample_steps(t, np.nan if previous is None else previous, hole_s, reset_s, period)
    assert int(missing) == ref_missing
    assert cuts.tolist() == np.flatnonzero(ref_steps >= reset_s).tolist()


def test_first_bad_sample_names_the_first_problem() -> None:
    t = np.arange(5.0) + 10.0
    xyz = np.zeros((5, 3))
    assert first_bad_sample(t, xyz, np.nan) == -1
    assert first_bad_sample(t, xyz, 9.5) == -1
    assert first_bad_sample(t, xyz, 10.0) == 0  # not after the previous sample
    bad_t = t.copy()
    bad_t[3] = bad_t[2]
    assert first_bad_sample(bad_t, xyz, np.nan) == 3
    for where in ((2, 1), (4, 2)):
        bad = xyz.copy()
        bad[where] = np.inf if where[1] == 1 else np.nan
        assert first_bad_sample(bad_t, bad, 99.0) == -2  # NaN or infinity is named before the order
    nan_t = t.copy()
    nan_t[1] = np.nan
    assert first_bad_sample(nan_t, xyz, np.nan) == -2
