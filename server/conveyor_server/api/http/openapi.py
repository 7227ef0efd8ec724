"""The OpenAPI 3 document of the HTTP API, built from the routing table (routes.py) and the
message descriptors: each message becomes a JSON schema of its proto JSON form (proto field
names; int64 as strings, bytes as base64, enums by name, Timestamp, Duration and FieldMask as
strings), so the document cannot drift from what the app parses and replies."""

from __future__ import annotations

from typing import Any

from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from conveyor_server.api.http import transcode
from conveyor_server.api.http.routes import ROUTES, Route

F = FieldDescriptor
_INT32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32}
_UINT32 = {F.TYPE_UINT32, F.TYPE_FIXED32}
_INT64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64, F.TYPE_UINT64, F.TYPE_FIXED64}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {
        "type": "string",
        "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
        "example": "30s",
    },
    "google.protobuf.FieldMask": {"type": "string", "example": "paused,max_concurrency"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    # Descriptors nest without bound; the parser checks them, the document only says "object".
    "google.protobuf.FileDescriptorSet": {"type": "object"},
}
STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: a gRPC status code number and a message",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["code", "message", "details"],
}
_ERRORS = {
    "400": "INVALID_ARGUMENT or FAILED_PRECONDITION (malformed JSON, a bad value, a lost lease)",
    "401": "UNAUTHENTICATED (with --auth: no token, or an unknown or revoked one)",
    "403": "PERMISSION_DENIED (with --auth: a role or queue the token is not granted)",
    "404": "NOT_FOUND",
    "409": "ALREADY_EXISTS",
    "413": "the request body is over the size limit",
    "429": "RESOURCE_EXHAUSTED",
    "503": "UNAVAILABLE",
    "default": "any other google.rpc.Status",
}

# Request examples: the fuzzer's "examples" phase sends these first, so that replies of
# accepted requests (not only errors) are checked against the document too.
_BODY_EXAMPLES: dict[str, Any] = {
    "Enqueue": {"queue": "mail", "task_type": "send", "payload_json": {"to": "a@example.com"}},
    "EnqueueBatch": {"jobs": [{"queue": "mail", "task_type": "send", "delay": "60s"}]},
    "CreateSchedule": {
        "name": "nightly",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "job": {"queue": "reports", "task_type": "build"},
    },
    "UpdateQueue": {"max_concurrency": 4, "rate_limit": {"rate": 10, "burst": 20}},
    "Lease": {"worker_id": "worker-1", "queues": ["mail"], "max_jobs": 10},
}
_PARAMETER_EXAMPLES: dict[str, Any] = {
    "name": "mail",
    "update_mask": "max_concurrency,rate_limit",
    "view": "JOB_VIEW_FULL",
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def message(self, descriptor: Descriptor, leave_out: frozenset[str] = frozenset()) -> Any:
        """A $ref to the message's component, or an inline schema when fields are left out."""
        known = _WELL_KNOWN.get(descriptor.full_name)
        if known is not None:
            return dict(known)
        if leave_out:
            return self._object(descriptor, leave_out)
        name = descriptor.full_name
        if name not in self.components:
            self.components[name] = {}  # placed first: recursive messages refer to it
            self.components[name] = self._object(descriptor, leave_out)
        return {"$ref": f"#/components/schemas/{name}"}

    def _object(self, descriptor: Descriptor, leave_out: frozenset[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                field.name: self.field(field)
                for field in descriptor.fields
                if field.name not in leave_out
            },
        }

    def field(self, field: FieldDescriptor) -> Any:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        if field.is_repeated:
            return {"type": "array", "items": self.single(field)}
        return self.single(field)

    def single(self, field: FieldDescriptor) -> Any:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        kind = field.type
        if kind in _INT32:
            return {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
        if kind in _UINT32:
            return {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
        if kind in _INT64:
            return {"type": "string", "format": "int64", "pattern": r"^-?[0-9]+$"}
        if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return {"type": "number"}
        if kind == F.TYPE_BOOL:
            return {"type": "boolean"}
        if kind == F.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        return {"type": "string"}


def openapi_document(max_body_bytes: int, *, bearer: bool = False) -> dict[str, Any]:
    """`bearer`: the coordinator runs with --auth, and every operation needs a token."""
    schemas = _Schemas()
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(route.openapi_template, {})[route.verb.lower()] = _operation(
            route, schemas
        )
    schemas.components["google.rpc.Status"] = STATUS_SCHEMA
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Conveyor coordinator HTTP/JSON API",
            "version": "v1",
            "description": (
                "The CoordinatorService of conveyor/v1/coordinator.proto over HTTP/JSON: "
                "proto JSON bodies (proto field names or lowerCamelCase), errors as "
                f"google.rpc.Status. Request bodies are limited to {max_body_bytes} bytes."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas.components},
    }
    if bearer:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "conveyor tokens create"}
        }
        document["security"] = [{"bearer": []}]
    return document


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    bound = {name for name in route.path_fields if "." not in name}
    operation: dict[str, Any] = {
        "operationId": route.rpc,
        "parameters": [_path_parameter(route, name) for name in route.path_fields]
        + _query_parameters(route, schemas, bound),
        "responses": {"200": {"description": "OK", "content": _json(_reply(route, schemas))}},
    }
    for code, description in _ERRORS.items():
        operation["responses"][code] = {
            "description": description,
            "content": _json({"$ref": "#/components/schemas/google.rpc.Status"}),
        }
    body = _body(route, schemas, frozenset(bound))
    if body is not None:
        content = _json(body)
        if route.rpc in _BODY_EXAMPLES:
            content["application/json"]["example"] = _BODY_EXAMPLES[route.rpc]
        operation["requestBody"] = {"required": False, "content": content}
    return operation


def _path_parameter(route: Route, name: str) -> dict[str, Any]:
    short = name.rsplit(".", 1)[-1]
    parameter = {"name": short, "in": "path", "required": True, "schema": {"type": "string"}}
    if short in _PARAMETER_EXAMPLES:
        parameter["example"] = _PARAMETER_EXAMPLES[short]
    return parameter


def _query_parameters(route: Route, schemas: _Schemas, bound: set[str]) -> list[dict[str, Any]]:
    if route.body == "*" or route.rpc == "Enqueue":
        return []
    found = []
    for field in route.request_type.fields:
        if field.name in bound or field.name == route.body:
            continue
        if transcode.query_field(route.request_type, field.name) is None:
            continue
        parameter = {
            "name": field.name,
            "in": "query",
            "required": False,
            "schema": schemas.field(field),
        }
        if field.name in _PARAMETER_EXAMPLES:
            parameter["example"] = _PARAMETER_EXAMPLES[field.name]
        found.append(parameter)
    return found


def _body(route: Route, schemas: _Schemas, bound: frozenset[str]) -> Any:
    if route.body is None:
        return None
    if route.rpc == "Enqueue":
        return _jobs_body(schemas)
    if route.body == "*":
        return schemas.message(route.request_type, bound)
    nested = {name.split(".", 1)[1] for name in route.path_fields if "." in name}
    body_type = route.request_type.fields_by_name[route.body].message_type
    assert body_type is not None, f"{route.rpc}: body {route.body} is not a message field"
    return schemas.message(body_type, frozenset(nested))


def _jobs_body(schemas: _Schemas) -> dict[str, Any]:
    """POST /v1/jobs: a JobSpec, `payload_json`, and the Schedule fields that make it a cron."""
    job: dict[str, Any] = schemas.message(pb.JobSpec.DESCRIPTOR, frozenset({"__none__"}))
    schedule = pb.Schedule.DESCRIPTOR
    for field in schedule.fields:
        if field.name != "job":
            job["properties"][field.name] = schemas.field(field)
    job["properties"]["payload_json"] = {
        "description": "the payload as any JSON value, stored as its UTF-8 JSON text"
    }
    job["description"] = (
        "A JobSpec. With cron (and timezone, name, ...) it creates a Schedule of this job."
    )
    return job


def _reply(route: Route, schemas: _Schemas) -> Any:
    reply = schemas.message(route.reply_type)
    if route.rpc == "Enqueue":
        return {"anyOf": [reply, schemas.message(pb.Schedule.DESCRIPTOR)]}
    return reply


def _json(schema: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}
