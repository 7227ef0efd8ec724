"""docker/healthcheck.py against a real gRPC health service (grpcio's own servicer, in a
thread-pool server): exit 0 only for SERVING, 1 for everything else, never 2 (Docker reserves
it). The coordinator itself is probed in test_docker_entrypoint.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from concurrent import futures
from types import ModuleType

import grpc
import pytest
from docker_support import DOCKER_DIR, free_port
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "conveyor_docker_healthcheck", DOCKER_DIR / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load()


class HealthServer:
    def __init__(self) -> None:
        self.servicer = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def set(
        self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        self.servicer.set(service, status)


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    server = HealthServer()
    server.server.start()
    try:
        yield server
    finally:
        server.server.stop(grace=None)


def test_healthcheck_exits_0_when_serving(health_server: HealthServer) -> None:
    health_server.set("", SERVING)
    assert healthcheck.main(["--address", health_server.address]) == 0


def test_healthcheck_exits_1_when_not_serving(health_server: HealthServer) -> None:
    health_server.set("", NOT_SERVING)
    assert healthcheck.main(["--address", health_server.address]) == 1


def test_healthcheck_exits_1_for_a_service_the_server_does_not_know(
    health_server: HealthServer,
) -> None:
    health_server.set("", SERVING)
    assert healthcheck.main(["--address", health_server.address, "--service", "nope.v1.X"]) == 1


def test_healthcheck_asks_for_the_service_it_is_given(health_server: HealthServer) -> None:
    health_server.set("", NOT_SERVING)
    health_server.set("conveyor.v1.CoordinatorService", SERVING)
    argv = ["--address", health_server.address, "--service", "conveyor.v1.CoordinatorService"]
    assert healthcheck.main(argv) == 0


def test_healthcheck_exits_1_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["--address", f"127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_healthcheck_dials_loopback_for_the_wildcard_listen_address_in_its_environment(
    health_server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    health_server.set("", SERVING)
    monkeypatch.setenv("CONVEYOR_LISTEN", f"0.0.0.0:{health_server.port}")
    assert healthcheck.main([]) == 0


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("0.0.0.0:7345", "127.0.0.1:7345"),
        (":7345", "127.0.0.1:7345"),
        ("[::]:7345", "[::1]:7345"),
        ("10.1.2.3:9000", "10.1.2.3:9000"),
        ("coordinator-a:7345", "coordinator-a:7345"),
    ],
)
def test_probe_address_turns_a_listen_address_into_one_to_dial(listen: str, address: str) -> None:
    assert healthcheck.probe_address(listen) == address


@pytest.mark.parametrize("argv", [["--timeout", "soon"], ["--timeout", "0"], ["--bogus"]])
def test_healthcheck_usage_error_exits_1_not_dockers_reserved_2(argv: list[str]) -> None:
    assert healthcheck.main(argv) == 1


def test_healthcheck_bad_listen_address_in_environment_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONVEYOR_LISTEN", "no-port-here")
    assert healthcheck.main([]) == 1
    assert "is not HOST:PORT" in capsys.readouterr().err
