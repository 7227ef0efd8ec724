"""The one routing table of the HTTP/JSON API: for each CoordinatorService RPC, an HTTP verb, a
path template and where the body goes, in the manner of google.api.http rules. Request and
reply types come from the service descriptor, so a route names nothing but the RPC; the app
(app.py) and the OpenAPI document (openapi.py) are both built from this table.

Template variables (`{job_id}`, `{queue.name}`) name request fields, dotted for nested ones.
`body` is "*" (the whole request, less the path's fields), one message field (the body is that
field), or None (no body: the remaining scalar fields come from the query string)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf.descriptor import Descriptor, MethodDescriptor

SERVICE = pb.DESCRIPTOR.services_by_name["CoordinatorService"]
_VARIABLE = re.compile(r"\{([a-z_][a-z0-9_.]*)\}")


@dataclass(frozen=True)
class Route:
    verb: str
    template: str
    rpc: str
    body: str | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts, last = [], 0
        for match in _VARIABLE.finditer(self.template):
            parts.append(re.escape(self.template[last : match.start()]))
            # On the raw (still percent-encoded) path, so an encoded '/' stays in one variable.
            parts.append(f"(?P<{_group(match.group(1))}>[^/]+)")
            last = match.end()
        parts.append(re.escape(self.template[last:]))
        object.__setattr__(self, "pattern", re.compile("".join(parts)))

    @property
    def method(self) -> MethodDescriptor:
        return SERVICE.methods_by_name[self.rpc]

    @property
    def request_type(self) -> Descriptor:
        return self.method.input_type

    @property
    def reply_type(self) -> Descriptor:
        return self.method.output_type

    @property
    def path_fields(self) -> list[str]:
        """The request fields the path binds, dotted for nested fields."""
        return _VARIABLE.findall(self.template)

    @property
    def openapi_template(self) -> str:
        """The template with each variable named by its last part (`{queue.name}` is
        `{name}`): OpenAPI tools take a dotted parameter for a path of its own."""
        return _VARIABLE.sub(lambda m: "{" + m.group(1).rsplit(".", 1)[-1] + "}", self.template)

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(raw_path)
        if found is None:
            return None
        return {
            name: unquote(found.group(_group(name)), errors="strict") for name in self.path_fields
        }


def _group(variable: str) -> str:
    return variable.replace(".", "__")


ROUTES: tuple[Route, ...] = (
    # POST /v1/jobs takes a JobSpec as the body; with `cron` it creates a schedule instead
    # (app.py, jobs_body).
    Route("POST", "/v1/jobs", "Enqueue", body="job"),
    Route("POST", "/v1/jobs:batch", "EnqueueBatch", body="*"),
    Route("GET", "/v1/jobs", "ListJobs"),
    Route("GET", "/v1/jobs/{job_id}", "GetJob"),
    Route("POST", "/v1/jobs/{job_id}:cancel", "CancelJob", body="*"),
    Route("POST", "/v1/jobs/{job_id}:retry", "RetryJob", body="*"),
    Route("POST", "/v1/jobs/{job_id}:wait", "WaitJob", body="*"),
    Route("POST", "/v1/jobs/{job_id}:heartbeat", "Heartbeat", body="*"),
    Route("POST", "/v1/jobs/{job_id}:receipt", "Receipt", body="*"),
    Route("POST", "/v1/heartbeats:batch", "HeartbeatBatch", body="*"),
    Route("POST", "/v1/receipts:batch", "ReceiptBatch", body="*"),
    Route("POST", "/v1/leases", "Lease", body="*"),
    Route("POST", "/v1/schedules", "CreateSchedule", body="schedule"),
    Route("GET", "/v1/schedules", "ListSchedules"),
    Route("GET", "/v1/schedules/{name}", "GetSchedule"),
    Route("PATCH", "/v1/schedules/{schedule.name}", "UpdateSchedule", body="schedule"),
    Route("DELETE", "/v1/schedules/{name}", "DeleteSchedule"),
    Route("POST", "/v1/schedules/{name}:pause", "PauseSchedule", body="*"),
    Route("POST", "/v1/schedules/{name}:resume", "ResumeSchedule", body="*"),
    Route("GET", "/v1/queues", "ListQueues"),
    Route("GET", "/v1/queues/{name}", "GetQueue"),
    Route("PATCH", "/v1/queues/{queue.name}", "UpdateQueue", body="queue"),
    Route("POST", "/v1/task-types", "RegisterTaskType", body="*"),
    Route("GET", "/v1/task-types", "ListTaskTypes"),
    Route("GET", "/v1/task-types/{name}", "GetTaskType"),
    Route("GET", "/v1/server-info", "GetServerInfo"),
)


def find(verb: str, raw_path: str) -> tuple[Route, dict[str, str]] | list[str]:
    """The route for this verb and path with its path variables, or the verbs the path
    allows (empty: no such path)."""
    allowed = []
    for route in ROUTES:
        variables = route.match(raw_path)
        if variables is None:
            continue
        if route.verb == verb:
            return route, variables
        allowed.append(route.verb)
    return allowed
