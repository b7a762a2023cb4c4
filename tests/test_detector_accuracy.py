"""A short version of bench/accuracy.py: a regression floor, looser than the bench targets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("simulator.api")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from accuracy import evaluate_night, f1


def test_accuracy_floor_on_short_simulated_nights() -> None:
    results = [
        evaluate_night("rls-moderate", 2001, 52.0, "both", hours=1.5),
        evaluate_night("rls-severe", 2002, 25.0, "left", hours=1.5),
        evaluate_night("mild", 2003, 100.0, "both", hours=1.5),
    ]
    assert f1(results) >= 0.95  # measured 0.970 at this commit (0.930 before the in-bed truth); bench target 0.95
    assert all(abs(r.index_error) <= max(3.5, 0.1 * r.true_index) for r in results)
