"""Schedule rows, on an open connection. The job template is the serialized JobSpec the API
layer validated; the store keeps it as opaque bytes, sealed by the store's codec (it holds a
payload: store/blobs.py), bound to the schedule's name."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from conveyor_server.core.model import Micros
from conveyor_server.core.namespaces import schedule_not_found
from conveyor_server.core.schedules import MisfirePolicy, OverlapPolicy, Schedule, ScheduleSpec
from conveyor_server.errors import AlreadyExists, shown
from conveyor_server.store import dialects
from conveyor_server.store.blobs import BlobCodec, codec_of
from conveyor_server.store.namespaced import in_namespace
from conveyor_server.store.schema import schedule_fires, schedules


def _values(schedule: Schedule, blobs: BlobCodec) -> dict[str, Any]:
    spec = schedule.spec
    return {
        "cron": spec.cron,
        "timezone": spec.timezone,
        "job_spec": blobs.seal(spec.name, "job_spec", spec.job_spec),
        "misfire_policy": int(spec.misfire_policy),
        "catch_up_limit": spec.catch_up_limit,
        "overlap_policy": int(spec.overlap_policy),
        "paused": spec.paused,
        "next_fire_at": schedule.next_fire_at,
        "last_fire_at": schedule.last_fire_at,
        "last_job_id": schedule.last_job_id,
    }


def schedule_from_row(row: Any, blobs: BlobCodec) -> Schedule:
    return Schedule(
        spec=ScheduleSpec(
            name=row.name,
            cron=row.cron,
            timezone=row.timezone,
            job_spec=blobs.open(row.name, "job_spec", row.job_spec) or b"",
            misfire_policy=MisfirePolicy(row.misfire_policy),
            catch_up_limit=row.catch_up_limit,
            overlap_policy=OverlapPolicy(row.overlap_policy),
            paused=bool(row.paused),
        ),
        next_fire_at=row.next_fire_at,
        last_fire_at=row.last_fire_at,
        last_job_id=row.last_job_id,
    )


def insert(conn: Connection, schedule: Schedule, now: Micros) -> None:
    try:
        with conn.begin_nested():
            conn.execute(
                sa.insert(schedules).values(
                    name=schedule.spec.name, created_at=now, **_values(schedule, codec_of(conn))
                )
            )
    except IntegrityError:
        raise AlreadyExists(
            f"a schedule named {shown(schedule.spec.name)} exists; update it or pick another name"
        ) from None


def load(conn: Connection, name: str) -> Schedule:
    row = (conn.execute(sa.select(schedules).where(schedules.c.name == name))).first()
    if row is None:
        raise schedule_not_found(name)
    return schedule_from_row(row, codec_of(conn))


def save(conn: Connection, schedule: Schedule) -> None:
    conn.execute(
        sa.update(schedules)
        .where(schedules.c.name == schedule.spec.name)
        .values(**_values(schedule, codec_of(conn)))
    )


def delete(conn: Connection, name: str) -> None:
    result = conn.execute(sa.delete(schedules).where(schedules.c.name == name))
    if not result.rowcount:
        raise schedule_not_found(name)


def page(
    conn: Connection, after: str | None, limit: int, namespace: str | None = None
) -> list[Schedule]:
    query = sa.select(schedules).order_by(schedules.c.name).limit(limit)
    if after:
        query = query.where(schedules.c.name > after)
    if namespace is not None:
        query = query.where(in_namespace(schedules.c.name, namespace))
    blobs = codec_of(conn)
    return [schedule_from_row(row, blobs) for row in conn.execute(query)]


def due(conn: Connection, now: Micros, limit: int) -> list[Schedule]:
    result = conn.execute(
        sa.select(schedules)
        .where(schedules.c.next_fire_at <= now, schedules.c.paused.is_(False))
        .order_by(schedules.c.next_fire_at)
        .limit(limit)
    )
    blobs = codec_of(conn)
    return [schedule_from_row(row, blobs) for row in result]


def next_fire_at(conn: Connection) -> Micros | None:
    value: Micros | None = conn.scalar(
        sa.select(sa.func.min(schedules.c.next_fire_at)).where(schedules.c.paused.is_(False))
    )
    return value


def claim_fire(conn: Connection, name: str, fire_at: Micros, now: Micros) -> bool:
    """Records a fire; False when it was recorded before (a restart, or another coordinator
    that fired it first): the primary key makes each fire happen once."""
    result = conn.execute(
        dialects.insert_ignoring_existing(conn.dialect, schedule_fires)
        .values(schedule=name, fire_at=fire_at, created_at=now)
        .returning(schedule_fires.c.fire_at)
    )
    return result.first() is not None


def record_fire_job(conn: Connection, name: str, fire_at: Micros, job_id: str) -> None:
    conn.execute(
        sa.update(schedule_fires)
        .where(schedule_fires.c.schedule == name, schedule_fires.c.fire_at == fire_at)
        .values(job_id=job_id)
    )
