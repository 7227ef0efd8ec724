"""schedules.job_spec (the template as a serialized JobSpec); jobs.receipt_digest

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Schedules kept their job template as JSON of a few copied fields, and lost every field the
copy forgot (task_version). The template is now the serialized conveyor.v1.JobSpec; existing
rows are rebuilt from their JSON. The migration uses the generated message class, which is
plain protobuf (no gRPC); JobSpec only ever gains fields, so this stays valid.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from conveyor.v1 import coordinator_pb2 as pb

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MICROS = 1_000_000


def _duration(micros: int) -> dict[str, int]:
    seconds, rest = divmod(micros, _MICROS)
    return {"seconds": seconds, "nanos": rest * 1000}


def _spec_from_json(data: bytes) -> bytes:
    raw: dict[str, Any] = json.loads(data)
    spec = pb.JobSpec(
        queue=raw["queue"],
        task_type=raw["task_type"],
        payload=base64.b64decode(raw["payload"]),
        priority=raw.get("priority") or 0,
        max_attempts=raw.get("max_attempts") or 0,
        parent_job_id=raw.get("parent_job_id") or "",
        throttle_key=raw.get("throttle_key") or "",
    )
    if raw.get("lease_duration") is not None:
        spec.lease_duration.FromMicroseconds(raw["lease_duration"])
    initial, multiplier, maximum, jitter = raw.get("retry") or [None] * 4
    if initial is not None:
        spec.retry_policy.initial_backoff.FromMicroseconds(initial)
    if maximum is not None:
        spec.retry_policy.max_backoff.FromMicroseconds(maximum)
    if multiplier is not None:
        spec.retry_policy.multiplier = multiplier
    if jitter is not None:
        spec.retry_policy.jitter = jitter
    return spec.SerializeToString(deterministic=True)


def _json_from_spec(data: bytes) -> bytes:
    spec = pb.JobSpec.FromString(data)
    retry = spec.retry_policy
    return json.dumps(
        {
            "queue": spec.queue,
            "task_type": spec.task_type,
            "payload": base64.b64encode(spec.payload).decode(),
            "priority": spec.priority,
            "max_attempts": spec.max_attempts or None,
            "lease_duration": (
                spec.lease_duration.ToMicroseconds() if spec.HasField("lease_duration") else None
            ),
            "retry": [
                retry.initial_backoff.ToMicroseconds()
                if retry.HasField("initial_backoff")
                else None,
                retry.multiplier if retry.HasField("multiplier") else None,
                retry.max_backoff.ToMicroseconds() if retry.HasField("max_backoff") else None,
                retry.jitter if retry.HasField("jitter") else None,
            ],
            "parent_job_id": spec.parent_job_id or None,
            "throttle_key": spec.throttle_key or None,
        }
    ).encode()


def _convert(source: str, target: str, convert: Any) -> None:
    bind = op.get_bind()
    table = sa.table(
        "schedules",
        sa.column("name", sa.String),
        sa.column(source, sa.LargeBinary),
        sa.column(target, sa.LargeBinary),
    )
    rows = bind.execute(sa.select(table.c.name, table.c[source])).all()
    for name, data in rows:
        bind.execute(sa.update(table).where(table.c.name == name).values({target: convert(data)}))


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("receipt_digest", sa.String(64)))
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("job_spec", sa.LargeBinary))
    _convert("job_template", "job_spec", _spec_from_json)
    with op.batch_alter_table("schedules") as batch:
        batch.alter_column("job_spec", existing_type=sa.LargeBinary, nullable=False)
        batch.drop_column("job_template")


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("job_template", sa.LargeBinary))
    _convert("job_spec", "job_template", _json_from_spec)
    with op.batch_alter_table("schedules") as batch:
        batch.alter_column("job_template", existing_type=sa.LargeBinary, nullable=False)
        batch.drop_column("job_spec")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("receipt_digest")
