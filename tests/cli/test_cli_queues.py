"""`conveyor queues ...` against a real coordinator."""

from __future__ import annotations

from datetime import timedelta

from cli_support import Conveyor, cli_env, run_cli
from conveyor import Client, RateLimit, RetryPolicy
from conveyor_server.main import Coordinator


async def test_queues_update_sets_a_rate_limit_visible_via_get(
    conveyor: Conveyor, client: Client
) -> None:
    result = await conveyor("queues", "update", "cli", "--rate-limit", "5/10")
    assert result.code == 0, result.stderr
    assert (await client.get_queue("cli")).rate_limit == RateLimit(rate=5, burst=10)


async def test_queues_update_none_clears_a_limit(conveyor: Conveyor, client: Client) -> None:
    await client.update_queue("cli", rate_limit=RateLimit(rate=5, burst=10), max_concurrency=3)
    result = await conveyor("queues", "update", "cli", "--rate-limit", "none", "--json")
    assert result.json()["rate_limit"] is None
    assert result.json()["max_concurrency"] == 3  # not named: unchanged


async def test_queues_update_of_one_retry_field_keeps_the_others(
    conveyor: Conveyor, client: Client
) -> None:
    await client.update_queue("cli", retry_policy=RetryPolicy(initial_backoff=timedelta(5)))
    result = await conveyor("queues", "update", "cli", "--retry-multiplier", "3")
    assert result.code == 0, result.stderr
    policy = (await client.get_queue("cli")).retry_policy
    assert (policy.initial_backoff, policy.multiplier) == (timedelta(5), 3)


async def test_queues_update_of_one_retention_keeps_the_others(
    conveyor: Conveyor, client: Client
) -> None:
    await client.update_queue("cli", retention={"succeeded": timedelta(hours=2)})
    result = await conveyor("queues", "update", "cli", "--retain-failed", "30d")
    assert result.code == 0, result.stderr
    queue = await client.get_queue("cli")
    assert (queue.retention_succeeded, queue.retention_failed) == (
        timedelta(hours=2),
        timedelta(days=30),
    )


async def test_queues_update_without_a_setting_is_a_usage_error(conveyor: Conveyor) -> None:
    result = await conveyor("queues", "update", "cli")
    assert result.code == 2
    assert "at least one setting" in result.stderr


async def test_queues_pause_and_resume(conveyor: Conveyor, client: Client) -> None:
    await conveyor("queues", "pause", "cli")
    assert (await client.get_queue("cli")).paused
    await conveyor("queues", "resume", "cli")
    assert not (await client.get_queue("cli")).paused


async def test_queues_list_reads_the_address_from_the_environment(
    live_coordinator: Coordinator, client: Client
) -> None:
    await client.enqueue("cli", "send")
    env = cli_env(CONVEYOR_ADDRESS=live_coordinator.address)
    result = await run_cli("queues", "list", "--json", env=env)
    assert result.code == 0, result.stderr
    assert [q["name"] for q in result.json()] == ["cli"]
