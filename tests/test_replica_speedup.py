"""Two detector replicas, each in its own process, share a live load: each receives its own subjects' batches
only and keeps up in real time (the short form of bench/replica_speedup.py, issue 22 item 3; the speed-up figure
itself is the bench's, docs/live.md)."""

from __future__ import annotations

import pytest

from bench.replica_speedup import _subjects, pin_plan, rung, summary
from detector.live.routing import shard_of

pytestmark = pytest.mark.services

SENSORS = 40
SECONDS = 25  # the verdict reads the lag after bench/live_throughput.py's 15-s warm-up


def test_two_replicas_each_receive_their_share_and_keep_up(influxd, tmp_path) -> None:
    run = rung(influxd, replicas=2, sensors=SENSORS, seconds=SECONDS, work=tmp_path, pin=False)
    assert run["subjects_announced"] == f"{SENSORS // 2}/{SENSORS // 2}"
    subjects = _subjects(SENSORS)
    for k, replica in enumerate(run["per_replica"]):
        mine = [s for s in subjects if shard_of(s, 2) == k]
        others = len(subjects) - len(mine)
        assert mine and others, "the load must give both replicas subjects"
        assert replica["subjects"] == len(mine)
        assert replica["kept_up"], replica
        # every batch of its own subjects, plus their sensors' statuses, nothing more
        assert replica["messages_expected"] == 2 * len(mine) * SECONDS
        assert (
            replica["messages_expected"] <= replica["messages_received"] <= replica["messages_expected"] + 2 * len(mine)
        )
        # of the other replica's subjects only the statuses (what names every subject), not one batch:
        # a replica subscribed to every sample topic would get 2 x SECONDS x others more
        assert replica["other_shards_messages_received"] <= 2 * others, replica
        assert replica["detector_cpu_us_per_message"] > 0
    assert run["kept_up"]
    assert run["cpu_sustainable_sensors"] > SENSORS


def test_pin_plan_gives_each_replica_its_own_core() -> None:
    assert pin_plan(1, [0, 1]) == ([{0}], {1})
    assert pin_plan(2, [0, 1]) == (
        [{0}, {1}],
        {0, 1},
    )  # no core left: the load shares them (the direct figure's caveat)
    assert pin_plan(2, [0, 1, 2, 3]) == ([{0}, {1}], {2, 3})
    with pytest.raises(ValueError, match="cores"):
        pin_plan(3, [0, 1])


def test_summary_reports_both_figures_and_compares_cpu_at_equal_load_per_replica() -> None:
    def run(n: int, sensors: int, kept: bool, cpu: int) -> dict:
        return {"replicas": n, "sensors": sensors, "kept_up": kept, "cpu_sustainable_sensors": cpu}

    out = summary(
        {
            1: [run(1, 1000, True, 2500), run(1, 1500, True, 2600), run(1, 2000, False, 2400)],
            2: [run(2, 2000, True, 4800), run(2, 3000, True, 4600), run(2, 4000, False, 4000)],
        }
    )
    assert out["sustained_direct_1"] == 1500 and out["sustained_direct_2"] == 3000
    assert out["speedup_direct"] == 2.0
    assert out["speedup_cpu"] == round(4600 / 2600, 2)  # 1 x 1500 against 2 x 3000
    assert out["not_kept_up_first_1"] == 2000
    unmatched = summary({1: [run(1, 1000, True, 2500)], 2: [run(2, 1500, True, 4000), run(2, 2000, False, 3000)]})
    assert unmatched["speedup_cpu"] == 1.6 and "best of each" in str(unmatched["cpu_compared_at"])
