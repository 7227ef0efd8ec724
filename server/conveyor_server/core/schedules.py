"""Recurring jobs: cron parsing, fire times in a time zone, and the misfire policy, as pure
functions (croniter for cron, zoneinfo for zones).

Cron: five fields (minute hour day month weekday), or six with SECONDS FIRST
("15 30 10 * * *" = 10:30:15 every day) — croniter's `second_at_beginning` mode.

Time zones follow the wall clock, the way a person reads a schedule: "0 9 * * *" in
Europe/Berlin fires at 09:00 local time in winter and in summer. On a daylight-saving change:
- a wall time that does not exist (02:30 on the spring-forward night) fires once, at the
  same distance past the jump (03:30 local), as PEP 495 maps it;
- a wall time that exists twice (02:30 on the fall-back night) fires once, at its first
  occurrence.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from conveyor_server.core.clock import MICROS_PER_SECOND
from conveyor_server.core.model import Micros
from conveyor_server.errors import InvalidArgument, shown

# SKIP still runs a fire this late: the loop that fires schedules is never exactly on time.
MISFIRE_GRACE: Micros = 60 * MICROS_PER_SECOND
DEFAULT_CATCH_UP_LIMIT = 10
# A cron expression that matches less often than this is refused (it would never fire).
_SEARCH_LIMIT = 1000
MAX_CATCH_UP_LIMIT = 500
MAX_CRON_LENGTH = 256
# IANA names are at most about 30 characters: "America/Argentina/ComodRivadavia" is the longest.
MAX_TIMEZONE_LENGTH = 64
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
# Any fixed moment works to prove a cron fires at all; croniter searches years ahead from it.
_PROOF_START = 946_684_800 * MICROS_PER_SECOND  # 2000-01-01T00:00:00Z


class MisfirePolicy(enum.IntEnum):
    SKIP = 1
    RUN_ONCE = 2
    CATCH_UP = 3


class OverlapPolicy(enum.IntEnum):
    ALLOW = 1
    SKIP = 2


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    name: str
    cron: str
    timezone: str
    # The job template: a serialized conveyor.v1.JobSpec, opaque below the API layer (which
    # validated it), so that every JobSpec field, present or future, reaches each fire.
    job_spec: bytes
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    catch_up_limit: int = DEFAULT_CATCH_UP_LIMIT
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    paused: bool = False


@dataclass(frozen=True, slots=True)
class Schedule:
    spec: ScheduleSpec
    next_fire_at: Micros | None
    last_fire_at: Micros | None
    last_job_id: str | None


@dataclass(frozen=True, slots=True)
class FirePlan:
    fires: list[Micros]  # fire times to enqueue now, oldest first
    next_fire_at: Micros


def validate_cron(expression: str, field: str = "cron") -> str:
    if len(expression) > MAX_CRON_LENGTH:
        raise InvalidArgument(f"{field} is longer than {MAX_CRON_LENGTH} characters")
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidArgument(
            f"{field} {shown(expression)} must have 5 fields (minute hour day month weekday) or "
            "6 with seconds first"
        )
    try:
        valid = croniter.is_valid(expression, second_at_beginning=len(fields) == 6)
    except CroniterError:
        valid = False
    if not valid:
        raise InvalidArgument(f"{field} {shown(expression)} is not a valid cron expression")
    normal = " ".join(fields)
    try:
        next_fire_after(normal, "UTC", _PROOF_START)
    except InvalidArgument:
        raise InvalidArgument(
            f"{field} {shown(expression)} never fires (a date that does not exist, such as "
            "30 February?)"
        ) from None
    return normal


def validate_timezone(name: str, field: str = "timezone") -> str:
    if not name:
        return "UTC"
    problem = f"{field} {shown(name)} is not an IANA time zone (say 'Europe/Berlin' or 'UTC')"
    # The pattern refuses paths (absolute, '..', '.') before zoneinfo opens a file; zoneinfo
    # then refuses what is not a zone file, such as the directory 'Europe'.
    if len(name) > MAX_TIMEZONE_LENGTH or not _ZONE_NAME.fullmatch(name):
        raise InvalidArgument(problem)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(problem) from None
    return name


def _micros(moment: datetime) -> Micros:
    return round(moment.timestamp() * MICROS_PER_SECOND)


def next_fire_after(cron: str, timezone: str, after: Micros) -> Micros:
    """The first fire strictly after `after`, walking the wall clock of `timezone`."""
    zone = ZoneInfo(timezone)
    local = datetime.fromtimestamp(after / MICROS_PER_SECOND, tz=UTC).astimezone(zone)
    # Start a second early: croniter's start is exclusive and wall times can repeat.
    start = local.replace(tzinfo=None, microsecond=0) - timedelta(seconds=1)
    walk = croniter(cron, start, second_at_beginning=len(cron.split()) == 6)
    for _ in range(_SEARCH_LIMIT):
        try:
            wall: datetime = walk.get_next(datetime)
        except (CroniterError, OverflowError):
            break  # no such date in croniter's search window, or past year 9999
        moment = _micros(wall.replace(tzinfo=zone, fold=0))
        if moment > after:
            return moment
    raise InvalidArgument(f"cron {shown(cron)} does not fire within {_SEARCH_LIMIT} steps")


def plan_fires(schedule: Schedule, now: Micros) -> FirePlan:
    """Which fires to enqueue now, by the misfire policy, and when to look next."""
    spec = schedule.spec
    assert schedule.next_fire_at is not None
    due: list[Micros] = []
    keep = spec.catch_up_limit if spec.misfire_policy == MisfirePolicy.CATCH_UP else 1
    fire = schedule.next_fire_at
    steps = 0
    while fire <= now:
        due.append(fire)
        if len(due) > keep:
            due.pop(0)  # keep only the newest
        steps += 1
        if steps == _SEARCH_LIMIT and keep < _SEARCH_LIMIT:
            # Long downtime and a frequent schedule: only the newest fires matter, so
            # skip ahead instead of walking every missed fire.
            period = (fire - schedule.next_fire_at) // steps
            restart = max(fire, now - period * (keep + 2))
            fire = next_fire_after(spec.cron, spec.timezone, restart)
            continue
        fire = next_fire_after(spec.cron, spec.timezone, fire)
    if spec.misfire_policy == MisfirePolicy.SKIP:
        due = [f for f in due if now - f <= MISFIRE_GRACE]
    return FirePlan(fires=due, next_fire_at=fire)
