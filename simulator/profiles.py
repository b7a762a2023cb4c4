"""Subject profiles: the few numbers that make a healthy sleeper's night differ from an RLS patient's.

Every number is a population-level anchor from the literature listed in docs/simulator.md; a night
draws its own values around them (night-to-night variability is large in PLM: 25/h between the
highest and lowest night of one RLS patient), so no two seeds give the same night.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Profile:
    """Population parameters of one kind of sleeper (rates per hour, times in minutes unless named)."""

    name: str
    title: str
    age: float
    plms_per_h: tuple[float, float]  # target PLMS index band (PLM in sleep per hour of sleep)
    run_mean: float  # mean number of movements in one periodic run (>= 4 make a series)
    wake_plm_factor: float  # PLM density in wake-in-bed relative to light NREM (PLMW)
    isolated_lm_per_h: float  # non-periodic LMs per hour in bed
    long_lm_per_h: float  # > 10 s leg movements (restlessness), mostly in wake
    twitch_per_h: float  # < 0.5 s jerks (hypnic and REM twitches)
    turnover_per_h: float  # posture changes in sleep per hour
    get_up_mean: float  # expected out-of-bed episodes per 8 h
    sleep_latency_min: float
    wake_bouts_per_8h: float
    wake_bout_median_min: float

    def with_age(self, age: float) -> Profile:
        if not 5 <= age <= 100:
            raise ValueError(f"age must be 5-100 years, got {age!r}")
        return replace(self, age=float(age))

    def imi_median_s(self) -> float:
        """Typical IMI: 24-28 s before 55, 14-16 s after 65 (Ferri et al.); linear in between."""
        return float(np.interp(self.age, [55.0, 65.0], [26.0, 15.5]))

    def draw_plms_target(self, rng: np.random.Generator) -> float:
        """Tonight's PLMS index: log-uniform inside the band (uniform for the healthy band that starts at 0)."""
        low, high = self.plms_per_h
        if low <= 0:
            return float(rng.uniform(0.0, high))
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("healthy", "healthy sleeper", 40, (0.0, 5.0), 5.0, 0.2, 6.0, 0.3, 8.0, 2.5, 0.4, 12, 4, 1.0),
        Profile("mild", "mild PLMS, no RLS", 58, (5.0, 15.0), 8.0, 0.4, 8.0, 0.6, 10.0, 3.0, 0.8, 18, 6, 1.2),
        Profile(
            "rls-moderate", "RLS with moderate PLMS", 55, (15.0, 40.0), 12.0, 0.8, 10.0, 1.5, 12.0, 3.5, 1.2, 30, 8, 1.5
        ),
        Profile(
            "rls-severe", "RLS with severe PLMS", 62, (40.0, 90.0), 20.0, 1.0, 12.0, 3.0, 14.0, 4.0, 2.0, 40, 10, 2.0
        ),
    )
}


def get_profile(name: str, age: float | None = None) -> Profile:
    """Look a profile up by name (case-insensitive); ValueError lists the known names."""
    try:
        profile = PROFILES[name.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    return profile if age is None else profile.with_age(age)
