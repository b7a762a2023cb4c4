"""Real services for the tests: mosquitto (password auth), influxd 1.x, victoria-metrics, a NATS cluster.

Missing binaries skip the tests that need them, with the install command as the reason --
unless PLM_REQUIRE_SERVICES=1 (as in CI), where a missing service fails the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plm.ops.localservices import Influxd1, Mosquitto, NatsCluster, ServiceError, VictoriaMetrics

REQUIRE_SERVICES = os.environ.get("PLM_REQUIRE_SERVICES") == "1"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the detector's numba loops once (cached on disk) before any test: on a fresh checkout the
    first compilation takes seconds, which must not land inside one test's timeout or a child process."""
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return  # an installation by role without the detector (tests/test_install_roles.py runs the collector's)
    from detector.scoring.scorer import warm_up

    warm_up()


def _unavailable(exc: ServiceError) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"PLM_REQUIRE_SERVICES=1 but {exc}")
    pytest.skip(str(exc))


def _factory(kind: type, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., object]]:
    started: list = []

    def make(**kwargs: object):
        try:
            service = kind(workdir=Path(tmp_path_factory.mktemp(kind.__name__.lower())), **kwargs)
            service.start()
        except ServiceError as exc:
            _unavailable(exc)
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def mosquitto_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Mosquitto]]:
    """Start a fresh mosquitto with the given users / ACL; stopped after the test."""
    yield from _factory(Mosquitto, tmp_path_factory)


@pytest.fixture
def influxd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Influxd1]]:
    yield from _factory(Influxd1, tmp_path_factory)


@pytest.fixture
def victoria_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., VictoriaMetrics]]:
    yield from _factory(VictoriaMetrics, tmp_path_factory)


@pytest.fixture
def nats_cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., NatsCluster]]:
    """Start a fresh three-node NATS cluster (MQTT 3.1.1, JetStream, password users); stopped after the test.
    For tests that kill nodes."""
    yield from _factory(NatsCluster, tmp_path_factory)


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One three-node NATS cluster (user ``plm``) per test module, for tests that leave every node running."""
    yield from _shared(NatsCluster, tmp_path_factory)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One shared broker (user ``plm``) for tests that only publish and subscribe."""
    yield from _shared(Mosquitto, tmp_path_factory)


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd1]:
    yield from _shared(Influxd1, tmp_path_factory)


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    yield from _shared(VictoriaMetrics, tmp_path_factory)


def _shared(kind: type, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    try:
        service = kind(workdir=Path(tmp_path_factory.mktemp(kind.__name__.lower())))
        service.start()
    except ServiceError as exc:
        _unavailable(exc)
    yield service
    service.stop()
