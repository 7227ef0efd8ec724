"""Stopping the pusher always ends its watch task, whatever it was waiting on."""

from __future__ import annotations

import asyncio

from conveyor_server.core.clock import SystemClock
from conveyor_server.core.model import Queue
from conveyor_server.maintenance.pusher import Pusher, PusherConfig


async def no_push_queues(_after: str | None, _limit: int) -> list[Queue]:
    return []


async def test_a_stop_right_after_a_queue_change_ends_the_watch() -> None:
    # A queue change wakes the watch in the same tick as stop() cancels it: on Python 3.11
    # asyncio.wait_for then returned the wake-up and dropped the cancel, so stop() waited
    # for a task that went on refreshing every 30 s (a test teardown hung for 10 minutes).
    for _ in range(10):
        pusher = Pusher(None, no_push_queues, SystemClock(), PusherConfig("push:t", 1024))  # type: ignore[arg-type]
        pusher.start()
        for _tick in range(5):
            await asyncio.sleep(0)  # the first refresh (no store: nothing to wait on) is done
        watch = pusher._task
        assert watch is not None and not watch.done()
        pusher.queue_changed("q")
        stopping = asyncio.ensure_future(pusher.stop())
        # A liveness bound, not a timing claim: a working stop() ends within a few ticks.
        done, _ = await asyncio.wait({stopping}, timeout=5)
        if stopping not in done:
            watch.cancel()
            await stopping
        assert stopping in done, "stop() went on waiting for the watch task"
