"""Migration 0004 rebuilds each schedule's JSON job template (revision 0003) as a serialized
JobSpec, keeping every value the JSON held."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from conveyor.v1 import coordinator_pb2 as pb
from conveyor_server.store.migrate import MIGRATIONS_DIR, upgrade_to_head


def _upgrade(conn: sa.Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)


def test_json_templates_become_serialized_job_specs(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    template = {
        "queue": "reports",
        "task_type": "build",
        "payload": base64.b64encode(b"\x00p").decode(),
        "priority": 4,
        "max_attempts": 3,
        "lease_duration": 45_000_000,
        "retry": [2_000_000, 3.0, None, 0.0],
        "parent_job_id": None,
        "throttle_key": "tenant",
    }
    with engine.begin() as conn:
        _upgrade(conn, "0003")
        conn.execute(
            sa.text(
                "INSERT INTO schedules (name, cron, timezone, job_template, misfire_policy, "
                "catch_up_limit, overlap_policy, paused, created_at) "
                "VALUES ('s', '0 9 * * *', 'UTC', :t, 2, 10, 1, 0, 0)"
            ),
            {"t": json.dumps(template).encode()},
        )
        upgrade_to_head(conn)
        stored = conn.execute(sa.text("SELECT job_spec FROM schedules")).scalar_one()
    engine.dispose()
    spec = pb.JobSpec.FromString(stored)
    expected = pb.JobSpec(
        queue="reports",
        task_type="build",
        payload=b"\x00p",
        priority=4,
        max_attempts=3,
        throttle_key="tenant",
        retry_policy=pb.RetryPolicy(multiplier=3.0, jitter=0.0),
    )
    expected.lease_duration.FromMicroseconds(45_000_000)
    expected.retry_policy.initial_backoff.FromMicroseconds(2_000_000)
    assert spec == expected
    assert spec.retry_policy.HasField("jitter") and not spec.retry_policy.HasField("max_backoff")
