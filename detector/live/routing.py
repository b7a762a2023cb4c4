"""Which replica, subject and leg a topic belongs to, worked out once per topic (not per message).

Horizontal scale: ``shard=(k, n)`` keeps the subjects whose stable hash falls in slot k, so both legs of a
subject meet in one replica; every replica subscribes to everything and ignores the rest, which is correct
on any broker (see docs/live.md).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from plm import wire

ROUTES_KEPT = 100_000  # distinct topics remembered; a flood of junk topics only empties the cache


def shard_of(subject: str, shards: int) -> int:
    """Stable across processes and Python versions (unlike ``hash``), so replicas agree."""
    return zlib.crc32(subject.encode()) % shards


def side_from_sensor_id(sensor: str) -> str | None:
    """The leg a sensor id names (``left-ankle``, ``R``), for sensors the configuration does not list."""
    lowered = sensor.lower()
    if lowered.startswith(("left", "l-", "l_")) or lowered in ("l",) or "left" in lowered:
        return "left"
    if lowered.startswith(("right", "r-", "r_")) or lowered in ("r",) or "right" in lowered:
        return "right"
    return None


@dataclass(frozen=True, slots=True)
class Route:
    """What a topic means to this replica."""

    owned: bool  # in this replica's shard
    parsed: wire.SensorTopic | None  # None: not a sensor topic (diary, our own status, or bad)
    side: str | None  # the leg of a sensor topic (None: cannot tell)


class Router:
    """Topic -> :class:`Route`, cached: a sensor sends thousands of batches to one topic. Everything a route
    depends on is fixed for a topic (the shard, the configuration, the sensor id's name, the leg a sensor was
    first seen on)."""

    def __init__(self, shard: tuple[int, int], side_of: Callable[[str, str], str | None]) -> None:
        self.shard = shard
        self._side_of = side_of
        self._routes: dict[str, Route] = {}

    def owns(self, subject: str) -> bool:
        """Is the subject in this replica's shard?"""
        return self.shard[1] == 1 or shard_of(subject, self.shard[1]) == self.shard[0]

    def __call__(self, topic: str) -> Route:
        route = self._routes.get(topic)
        if route is not None:
            return route
        parts = topic.split("/")
        owned = len(parts) < 4 or self.shard[1] == 1 or shard_of(parts[2], self.shard[1]) == self.shard[0]
        parsed: wire.SensorTopic | None = None
        side: str | None = None
        if owned and not topic.endswith("/_diary"):
            try:
                parsed = wire.parse_sensor_topic(topic)
            except wire.WireFormatError:
                return Route(owned, None, None)  # not cached: the caller counts it as bad, each time
            side = self._side_of(parsed.subject, parsed.sensor)
        if len(self._routes) >= ROUTES_KEPT:
            self._routes.clear()
        route = self._routes[topic] = Route(owned, parsed, side)
        return route
