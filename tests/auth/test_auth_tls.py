"""TLS and mutual TLS with certificates made in the test, and the refusal to listen on a
non-loopback address without them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from certs import Certs, make_certs
from conveyor import Client
from conveyor.errors import ConveyorError
from conveyor_server.config import ConfigError, ServerConfig
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


@pytest.fixture
async def tls_coordinator(
    server_config: ServerConfig, clock: FakeClock, certs: Certs
) -> AsyncIterator[Coordinator]:
    config = dataclasses.replace(
        server_config, tls_cert=str(certs.server.cert), tls_key=str(certs.server.key)
    )
    coord = await Coordinator.start(config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


@pytest.fixture
async def mtls_coordinator(
    server_config: ServerConfig, clock: FakeClock, certs: Certs
) -> AsyncIterator[Coordinator]:
    config = dataclasses.replace(
        server_config,
        tls_cert=str(certs.server.cert),
        tls_key=str(certs.server.key),
        tls_client_ca=str(certs.ca),
    )
    coord = await Coordinator.start(config, clock=clock)
    try:
        yield coord
    finally:
        await coord.stop(grace=1.0)


async def test_client_trusting_the_ca_talks_tls(tls_coordinator: Coordinator, certs: Certs) -> None:
    async with Client(
        tls_coordinator.address, tls_root_certificates=certs.ca.read_bytes(), timeout=10
    ) as client:
        assert (await client.server_info()).max_payload_bytes > 0


async def test_client_trusting_another_ca_is_refused(
    tls_coordinator: Coordinator, certs: Certs
) -> None:
    async with Client(
        tls_coordinator.address, tls_root_certificates=certs.other_ca.read_bytes(), timeout=5
    ) as client:
        with pytest.raises(ConveyorError):
            await client.server_info()


async def test_plaintext_client_cannot_talk_to_a_tls_server(tls_coordinator: Coordinator) -> None:
    async with Client(tls_coordinator.address, timeout=5) as client:
        with pytest.raises(ConveyorError):
            await client.server_info()


async def test_mutual_tls_accepts_a_client_certificate_of_its_ca(
    mtls_coordinator: Coordinator, certs: Certs
) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.read_bytes(),
        private_key=certs.client.key.read_bytes(),
        certificate_chain=certs.client.cert.read_bytes(),
    )
    async with Client(mtls_coordinator.address, credentials=credentials, timeout=10) as client:
        assert (await client.server_info()).max_payload_bytes > 0


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_coordinator: Coordinator, certs: Certs
) -> None:
    async with Client(
        mtls_coordinator.address, tls_root_certificates=certs.ca.read_bytes(), timeout=5
    ) as client:
        with pytest.raises(ConveyorError):
            await client.server_info()


def test_non_loopback_listen_without_tls_and_tokens_is_refused_naming_insecure() -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        ServerConfig(listen="0.0.0.0:7345")


def test_non_loopback_listen_with_tls_but_no_tokens_is_refused(certs: Certs) -> None:
    with pytest.raises(ConfigError, match="reachable from other machines"):
        ServerConfig(listen="0.0.0.0:7345", tls_cert=str(certs.server.cert), tls_key="k")


def test_non_loopback_listen_with_insecure_is_allowed() -> None:
    ServerConfig(listen="0.0.0.0:7345", insecure=True)


def test_non_loopback_listen_with_tls_and_tokens_is_allowed() -> None:
    ServerConfig(listen="[::]:7345", tls_cert="c.pem", tls_key="k.pem", auth=True)


def test_non_loopback_listen_with_mutual_tls_is_allowed() -> None:
    ServerConfig(listen="10.0.0.5:7345", tls_cert="c", tls_key="k", tls_client_ca="ca")


@pytest.mark.parametrize("listen", ["127.0.0.1:7345", "localhost:7345", "[::1]:7345"])
def test_loopback_listen_needs_nothing(listen: str) -> None:
    ServerConfig(listen=listen)
