"""Simulated overnight ankle acceleration with ground truth (stands in for sensor + collector).

    >>> night = simulate_night("rls-severe", seed=7, duration_h=0.5)
    >>> night.legs["left"].xyz.shape[1], night.truth.score().rules.name
    (3, 'wasm2016')

See docs/simulator.md for the model and its sources.
"""

from simulator.api import LegRecording, SimulatedNight, prepare_night, simulate_night
from simulator.csvio import read_leg_csv, write_leg_csv
from simulator.profiles import PROFILES, Profile, get_profile
from simulator.truth import Truth

__all__ = [
    "PROFILES",
    "LegRecording",
    "Profile",
    "SimulatedNight",
    "Truth",
    "get_profile",
    "prepare_night",
    "read_leg_csv",
    "simulate_night",
    "write_leg_csv",
]
