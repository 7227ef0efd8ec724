"""The Node SDK sends its token (from $CONVEYOR_TOKEN here) and speaks TLS with
`tlsRootCertificates`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from auth_support import MakeToken
from certs import make_certs
from conveyor_server.config import ServerConfig
from conveyor_server.core.auth import parse_roles
from conveyor_server.core.clock import FakeClock
from conveyor_server.main import Coordinator
from conveyor_server.store.tokens import TokenStore

HERE = Path(__file__).parent
SCRIPT = HERE / "node_auth_client.mjs"

if shutil.which("node") is None or not (HERE.parent.parent / "sdk/node/node_modules").is_dir():
    pytest.skip("the Node SDK tests need node and sdk/node/node_modules", allow_module_level=True)


async def _run(address: str, token: str | None, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_TOKEN"}
    if token is not None:
        env["CONVEYOR_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), address, *args, stdout=asyncio.subprocess.PIPE, env=env
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_node_client_sends_the_token_from_the_environment(
    auth_coordinator: Coordinator, make_token: MakeToken
) -> None:
    token = make_token("node-producer", "producer")
    assert "ok" in await _run(auth_coordinator.address, token)


async def test_node_client_without_a_token_is_unauthenticated(
    auth_coordinator: Coordinator,
) -> None:
    assert await _run(auth_coordinator.address, None) == {"code": "UNAUTHENTICATED"}


async def test_node_client_talks_tls_with_a_token(
    server_config: ServerConfig, clock: FakeClock, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    config = dataclasses.replace(
        server_config, auth=True, tls_cert=str(certs.server.cert), tls_key=str(certs.server.key)
    )
    coordinator = await Coordinator.start(config, clock=clock)
    try:
        store = TokenStore(config.db_url)
        token = store.create("node-tls", "default", parse_roles(["producer"]), ())
        store.close()
        assert "ok" in await _run(coordinator.address, token, str(certs.ca))
    finally:
        await coordinator.stop(grace=1.0)
