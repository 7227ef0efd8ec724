"""The coordinator's clock counts elapsed time on the monotonic clock: a step of the wall
clock moves neither lease expiries nor timeouts, only (slowly) what users see (issue 7, 7)."""

from __future__ import annotations

import itertools

import structlog
from conveyor_server.core.clock import MAX_SLEW, MICROS_PER_SECOND, SystemClock

S = MICROS_PER_SECOND
NS = 1_000_000_000
START_NS = 1_800_000_000 * NS


class Machine:
    """A wall clock that an operator can step, and a monotonic clock that only runs."""

    def __init__(self) -> None:
        self.wall = START_NS
        self.monotonic = 5 * NS

    def run(self, seconds: float) -> None:
        self.wall += round(seconds * NS)
        self.monotonic += round(seconds * NS)

    def step_wall(self, seconds: float) -> None:
        self.wall += round(seconds * NS)

    def clock(self) -> SystemClock:
        return SystemClock(wall_ns=lambda: self.wall, monotonic_ns=lambda: self.monotonic)


def _seconds_until_expired(machine: Machine, step_after: float, step: float) -> int:
    """A 30 s lease granted now, never heartbeated: after how many whole seconds does the
    reaper's test (lease_expires_at <= now) first hold, if the wall clock steps by `step`
    seconds `step_after` seconds in? The coordinator reads its clock every second."""
    clock = machine.clock()
    expires_at = clock.now() + 30 * S
    for second in range(1, 4000):
        machine.run(1)
        if second == step_after:
            machine.step_wall(step)
        if expires_at <= clock.now():
            return second
    raise AssertionError("never expired")


def test_a_wall_clock_step_forward_does_not_expire_a_healthy_lease() -> None:
    # On the wall clock it would expire after 10 s (20 of 20 healthy leases failed).
    assert _seconds_until_expired(Machine(), step_after=10, step=+45) == 30


def test_a_wall_clock_step_back_does_not_keep_a_dead_workers_lease() -> None:
    # On the wall clock it would expire after about an hour and a half-minute.
    assert _seconds_until_expired(Machine(), step_after=10, step=-3600) == 31


def test_without_a_step_the_clock_is_the_wall_clock() -> None:
    machine = Machine()
    clock = machine.clock()
    machine.run(123.456)
    assert clock.now() == machine.wall // 1_000


def test_after_a_step_the_clock_slews_toward_the_wall_clock_never_backwards() -> None:
    machine = Machine()
    clock = machine.clock()
    machine.step_wall(-10)
    readings = []
    for _ in range(20):
        machine.run(100)
        readings.append(clock.now())

    assert readings == sorted(readings)
    assert all(b - a >= (1 - MAX_SLEW) * 100 * S for a, b in itertools.pairwise(readings))
    assert readings[-1] == machine.wall // 1_000  # 10 s absorbed within 1,000 s at 1 %


def test_a_step_is_logged_once_not_on_every_reading() -> None:
    machine = Machine()
    clock = machine.clock()
    machine.step_wall(45)
    with structlog.testing.capture_logs() as logs:
        for _ in range(100):
            machine.run(1)
            clock.now()
    warnings = [entry for entry in logs if entry["event"] == "clock.wall_clock_apart"]
    assert len(warnings) == 1
    assert warnings[0]["wall_minus_coordinator_s"] == 45.0
