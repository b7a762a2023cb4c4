"""The activity signal of one sensor: band-passed acceleration magnitude and its adaptive noise floor.

Why this signal: a leg movement tilts the shank, which moves gravity between the sensor axes by
about |g| * angle (a 5 degree tilt is ~90 mg), and it adds linear acceleration. Filtering each axis
with the same linear filter and taking the vector norm keeps both and is exactly invariant to how the
sensor is mounted (a rotation commutes with a per-axis linear filter and preserves the norm). The
low-pass removes sensor noise above leg-motion frequencies; the lagged difference removes the static
gravity vector without a high-pass filter's long tail. Every stage is causal with carried state, so feeding a night in
any chunking gives bit-identical numbers (scipy's ``sosfilt`` with ``zi`` is exact across chunks, and
the noise floor uses order statistics of blocks aligned to the sample index, not to chunk edges).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal as sps

from detector.params import DetectorParams

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
    them costs milliseconds, which a live service starting thousands of sensors should pay once."""
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
    ``lag`` seconds after the leg stops, which :class:`detector.lm.LegDetector` subtracts from the offset.
    Unlike a one-sample derivative it integrates the motion over ``lag``, so slow small tilts stand
    well above sensor noise.
    """

    def __init__(self, rate_hz: float, params: DetectorParams) -> None:
        if rate_hz < MIN_RATE_HZ:
            raise ValueError(f"sample rate {rate_hz:.3g} Hz is too low: the detector needs >= {MIN_RATE_HZ:g} Hz")
        # rates estimated from data differ in the last digits between sensors: designing for the rate
        # rounded to 0.1 mHz changes nothing measurable and lets all sensors at one rate share a design
        design = _design(round(rate_hz, 4), params)
        self._sos_low, self._sos_env, self._zi_low_unit = design.low, design.env, design.low_zi
        self.lag_n = design.lag_n
        self._sos_fast, self._zi_fast_unit = design.fast, design.fast_zi
        self._zi_fast: np.ndarray | None = None
        self.boundary_delay_s = design.boundary_delay_s
        self._sos_tremor, self._zi_tremor_unit = design.tremor, design.tremor_zi
        self._zi_tremor: np.ndarray | None = None
        self._zi_low: np.ndarray | None = None
        self._zi_env: np.ndarray | None = None
        self._history: np.ndarray | None = None  # last lag_n low-passed samples
        self.quiet_n = max(1, round(params.quiet_lag_s * rate_hz))
        self._fast_history: np.ndarray | None = None  # last quiet_n boundary samples

    def reset(self) -> None:
        """Forget the past (after a hole in the data); the next sample settles the filters."""
        self._zi_low = None
        self._zi_env = None
        self._zi_tremor = None
        self._zi_fast = None
        self._history = None
        self._fast_history = None

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
        if n == 0:
            return np.zeros(0), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
        if self._zi_low is None:
            # steady state for a constant input = the first sample: gravity produces no transient
            self._zi_low = self._zi_low_unit[:, :, None] * xyz[0][None, None, :]
            self._zi_env = np.zeros((self._sos_env.shape[0], 2))
            self._history = np.repeat(xyz[:1], self.lag_n, axis=0)
            self._zi_tremor = self._zi_tremor_unit[:, :, None] * xyz[0][None, None, :]
            self._zi_fast = self._zi_fast_unit[:, :, None] * xyz[0][None, None, :]
            self._fast_history = np.repeat(xyz[:1], self.quiet_n, axis=0)
        fast, self._zi_fast = sps.sosfilt(self._sos_fast, xyz, axis=0, zi=self._zi_fast)
        assert self._fast_history is not None
        fast_ext = np.concatenate((self._fast_history, fast))
        step = fast - fast_ext[:n]
        self._fast_history = fast_ext[n:].copy()  # a copy: a view would keep the whole chunk alive
        still = np.sqrt(np.einsum("ij,ij->i", step, step))
        low, self._zi_low = sps.sosfilt(self._sos_low, xyz, axis=0, zi=self._zi_low)
        assert self._history is not None
        extended = np.concatenate((self._history, low))
        change = low - extended[:n]
        self._history = extended[n:].copy()
        change *= change
        tremor, self._zi_tremor = sps.sosfilt(self._sos_tremor, xyz, axis=0, zi=self._zi_tremor)
        tremor *= tremor
        norm = np.sqrt(change.sum(axis=1) + tremor.sum(axis=1))
        env, self._zi_env = sps.sosfilt(self._sos_env, norm, zi=self._zi_env)
        return env, low, fast, still


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
        self._partial = np.zeros(0)
        self._history: np.ndarray | None = None  # last window-1 block medians
        self._current = math.inf  # floor of the block being filled

    def per_sample(self, env: np.ndarray) -> np.ndarray:
        """The floor (g) that applies to each sample of ``env``; consumes ``env`` into the block state."""
        n = env.shape[0]
        values = np.concatenate((self._partial, env)) if self._partial.size else env
        head = self._partial.shape[0]
        complete = values.shape[0] // self.block_n
        if complete == 0:
            self._partial = values.copy()
            return np.full(n, self._current)
        blocks = values[: complete * self.block_n].reshape(complete, self.block_n)
        mid = self.block_n // 2
        medians = np.partition(blocks, mid, axis=1)[:, mid]
        if self._history is None:
            self._history = np.full(self.window - 1, medians[0])
        extended = np.concatenate((self._history, medians))
        windows = sliding_window_view(extended, self.window)
        next_floors = np.partition(windows, self.rank, axis=1)[:, self.rank]
        self._history = extended[extended.shape[0] - (self.window - 1) :].copy()
        # sample counts per block as they fall in this call: first (partly filled) block, full ones, the rest
        lengths = np.full(complete + 1, self.block_n)
        lengths[0] = self.block_n - head
        lengths[-1] = values.shape[0] - complete * self.block_n
        floors = np.concatenate(([self._current], next_floors))
        self._current = float(next_floors[-1])
        self._partial = values[complete * self.block_n :].copy()
        return np.repeat(floors, lengths)
