"""Every threshold of the acceleration detector, as one frozen dataclass.

Each field's reason is in docs/scoring.md ("From acceleration to leg movements"); the short comment
here says what it is. Times are seconds, accelerations g (1 g = 9.81 m/s^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class DetectorParams:
    # --- timing and gaps
    rate_hz: float | None = None  # nominal sample rate; None = estimated from the first samples
    rate_estimate_samples: int = 256  # samples buffered to estimate the rate (chunk-independent)
    missing_dt_periods: float = 1.5  # a step longer than this many periods counts as missing data
    filter_reset_s: float = 1.0  # a hole this long restarts the filters (settled on the next sample)
    series_gap_s: float = 5.0  # a hole this long is a data gap: closes a movement, breaks the links it touches
    # --- activity signal (orientation-free)
    lowpass_hz: float = 2.0  # removes sensor noise above leg-motion frequencies (each axis)
    tremor_low_hz: float = 1.0  # band of the dynamic part: tremor of a held contraction, jerks ...
    tremor_high_hz: float = 10.0  # ... (a separate band, added in quadrature to the change signal)
    boundary_hz: float = 5.0  # low-pass of the signal that places onsets/offsets (short impulse response)
    rest_average_s: float = 0.2  # resting reference for the boundary signal = its mean over this long
    diff_lag_s: float = 0.5  # activity = change of the low-passed vector over this lag (removes gravity)
    quiet_lag_s: float = 0.1  # stillness = change of the boundary vector over this lag (sharp in time)
    envelope_s: float = 0.05  # time constant of the activity envelope (1st-order smoothing)
    # --- adaptive noise floor
    floor_block_s: float = 1.0  # block length for the per-block median of the envelope
    floor_window_blocks: int = 60  # floor = low order statistic of the last N block medians
    floor_quantile: float = 0.2  # which order statistic (0..1) of the window
    # --- hysteresis (mirrors the EMG 8 uV onset / 2 uV offset rule)
    onset_factor: float = 4.0  # onset: envelope above floor x this ...
    onset_min_g: float = 0.010  # ... and above this absolute level
    offset_factor: float = 2.0  # offset: envelope below floor x this ...
    offset_min_g: float = 0.005  # ... or below this absolute level (whichever is higher)
    offset_quiet_s: float = 0.5  # offset = start of >= this long below the offset level
    return_fraction: float = 0.5  # back within this fraction of the peak displacement = returned to rest
    hold_max_s: float = 10.0  # a displaced leg still this long is in a new position (longest LM is 10 s)
    min_lm_s: float = 0.5  # shorter movements are twitches, not LMs
    sustained_s: float = 0.5  # an LM needs a window this long with median above the offset level
    # --- in bed / sleep estimate
    epoch_s: float = 30.0  # scoring epoch for posture and sleep/wake
    upright_active_fraction: float = 0.5  # epochs this active (walking) define the leg's upright direction
    upright_min_epochs: int = 2  # at least this many such epochs to trust the upright direction
    upright_cluster_deg: float = 30.0  # epochs within this angle of the robust mean form the upright cluster
    upright_trusted_epochs: int = 10  # a cluster this large (5 min of walking: a day) needs no plausibility check
    upright_still_max_fraction: float = 0.05  # else: at most this share of the still epochs may be upright
    still_active_fraction: float = 0.1  # an epoch at most this active is still (for the check above)
    walk_block_s: float = 5.0  # short walks (to bed, < 30 s) are found in blocks this long
    walk_active_fraction: float = 0.9  # a walking block is active this much ...
    walk_envelope_g: float = 0.3  # ... with a mean activity envelope this high (a shank swinging >= ~15 deg)
    walk_min_blocks: int = 2  # ... in a run of at least this many consecutive blocks (longer than any LM)
    lying_angle_deg: float = 45.0  # gravity this far from the upright direction = leg lying
    posture_change_deg: float = 30.0  # a movement turning the leg this much may be getting into/out of bed
    wake_active_fraction: float = 0.3  # an in-bed epoch this active is wake
    wake_spread_epochs: int = 1  # wake also covers this many epochs either side
    missing_flag_fraction: float = 0.1  # flag a night with more missing data than this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"DetectorParams.{f.name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"DetectorParams.{f.name} must be >= 0, got {value!r}")
        if self.rate_hz is not None and not 1.0 <= self.rate_hz <= 1000.0:
            raise ValueError(f"rate_hz {self.rate_hz} outside 1-1000 Hz")
        if not 0 <= self.floor_quantile <= 1:
            raise ValueError("floor_quantile must be within 0..1")
        if self.offset_factor > self.onset_factor or self.offset_min_g > self.onset_min_g:
            raise ValueError("the offset level must not exceed the onset level (hysteresis)")
        if self.diff_lag_s <= 0 or self.lowpass_hz <= 0:
            raise ValueError("diff_lag_s and lowpass_hz must be > 0")
        if not 0 < self.quiet_lag_s < self.offset_quiet_s:
            raise ValueError("quiet_lag_s must be > 0 and shorter than offset_quiet_s")
        if self.series_gap_s < self.filter_reset_s:
            raise ValueError("series_gap_s must be >= filter_reset_s")
        if self.rate_estimate_samples < 8 or self.floor_window_blocks < 1 or self.upright_min_epochs < 1:
            raise ValueError("rate_estimate_samples >= 8, floor_window_blocks >= 1, upright_min_epochs >= 1")
        if self.walk_block_s <= 0 or self.walk_min_blocks < 1:
            raise ValueError("walk_block_s must be > 0 and walk_min_blocks >= 1")
