"""The SDK client reads a coordinator's limits (GetServerInfo) and lists jobs in either view."""

from __future__ import annotations

from datetime import timedelta

from conveyor import Client
from conveyor_server.config import ServerConfig


async def test_server_info_reports_the_payload_limit(
    client: Client, server_config: ServerConfig
) -> None:
    info = await client.server_info()
    assert info.max_payload_bytes == server_config.max_payload_bytes
    assert info.max_lease_wait == timedelta(seconds=30)
    assert info.max_message_bytes >= info.default_max_reply_bytes > 0


async def test_list_jobs_has_payloads_only_in_the_full_view(client: Client) -> None:
    await client.enqueue("q", "t", b"body")
    assert [j.payload for j in (await client.list_jobs("q")).jobs] == [b""]
    assert [j.payload for j in (await client.list_jobs("q", full=True)).jobs] == [b"body"]
