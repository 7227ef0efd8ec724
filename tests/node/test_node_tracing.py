"""Issue 11, item 3, in the Node SDK: with @opentelemetry/api installed (an optional peer
dependency), the Client sends the active span's traceparent with Enqueue and the Worker runs
each attempt in a CONSUMER span under it, so one trace runs from the producer through every
attempt. tests/node/tracing_script.mjs runs both sides with the real OpenTelemetry SDK."""

from __future__ import annotations

import json

from conveyor_server.main import Coordinator
from node_support import HERE, SpawnNode, require_node

require_node()

CONSUMER = 4  # SpanKind.CONSUMER in @opentelemetry/api
ERROR = 2  # SpanStatusCode.ERROR


async def test_one_trace_runs_from_the_producer_through_every_attempt(
    live_coordinator: Coordinator, spawn_node: SpawnNode
) -> None:
    script = await spawn_node(str(HERE / "tracing_script.mjs"), live_coordinator.address)
    assert script.process.stdout is not None
    output = json.loads(await script.process.stdout.readline())
    assert await script.process.wait() == 0

    producer = output["producer"]
    assert output["state"] == "JOB_STATE_SUCCEEDED"
    assert output["traceparent"].split("-")[1:3] == [producer["traceId"], producer["spanId"]]
    assert output["seen"] == [
        {"attempt": 1, "traceId": producer["traceId"]},
        {"attempt": 2, "traceId": producer["traceId"]},
    ]
    spans = sorted(output["spans"], key=lambda span: span["attempt"])
    assert [span["attempt"] for span in spans] == [1, 2]
    for span in spans:
        assert span["traceId"] == producer["traceId"]
        assert span["parentSpanId"] == producer["spanId"]
        assert span["kind"] == CONSUMER
    assert spans[0]["statusCode"] == ERROR
