"""JSON <-> protobuf for the HTTP API: a request message from a route's path variables, query
string and body (google.protobuf.json_format, proto field names or lowerCamelCase), a reply
as proto JSON with proto field names, and gRPC status codes as HTTP statuses."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from conveyor_server.api.http.routes import Route
from conveyor_server.errors import InvalidArgument, shown

# google/rpc/code.proto: the HTTP status of each canonical code.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
# Characters of a json_format or json error kept in a message: those quote the bad value.
MAX_PARSER_MESSAGE = 200
# Well-known types written as one JSON string, so they can come from a path or a query.
STRING_MESSAGES = {
    "google.protobuf.Duration",
    "google.protobuf.Timestamp",
    "google.protobuf.FieldMask",
}


def code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


def status_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """A google.rpc.Status in proto JSON."""
    return {"code": code_number(code), "message": message, "details": []}


def reply_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def parse_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise InvalidArgument("request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidArgument("request body is not valid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"request body must be a JSON object, not {type(value).__name__}")
    return value


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (RFC 8259) and proto JSON do not have them.
    raise InvalidArgument(f"request body is not valid JSON: {name} is not a JSON value")


def build_request(
    route: Route,
    path: dict[str, str],
    query: list[tuple[str, str]],
    body: dict[str, Any] | None,
) -> Message:
    """The route's request message: body, then query parameters, then path variables, each
    refused when it sets a field another source already set."""
    document: dict[str, Any] = {}
    if route.body == "*":
        document = dict(body or {})
    elif route.body is not None:
        document = {route.body: body or {}}
    elif body:
        raise InvalidArgument(f"{route.verb} {route.template} takes no request body")
    for name, values in _grouped(query).items():
        _place(document, name, _query_value(route.request_type, name, values))
    for name, value in path.items():
        _place(document, name, value)
    return parse(document, route.request_type)


def parse(document: dict[str, Any], descriptor: Descriptor) -> Message:
    message = GetMessageClass(descriptor)()
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as error:
        raise InvalidArgument(_cut(str(error))) from None
    except RecursionError:
        raise InvalidArgument("request is nested too deeply") from None
    return message


def _cut(text: str) -> str:
    if len(text) <= MAX_PARSER_MESSAGE:
        return text
    return f"{text[:MAX_PARSER_MESSAGE]}... ({len(text)} characters)"


def _grouped(query: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in query:
        grouped.setdefault(name, []).append(value)
    return grouped


def _place(document: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    target = document
    for part in parents:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidArgument(f"{part} must be a JSON object")
        target = child
    if leaf in target and target[leaf] != value:
        raise InvalidArgument(
            f"{dotted} is set twice with different values (path, query or body): "
            f"{shown(target[leaf])} and {shown(value)}"
        )
    target[leaf] = value


def query_field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    """The top-level field a query parameter may set: a scalar, an enum or a well-known type
    written as a string (repeated: the parameter given several times)."""
    found = descriptor.fields_by_name.get(name)
    if found is None:
        return None
    if found.message_type is not None and found.message_type.full_name not in STRING_MESSAGES:
        return None
    return found


def _query_value(descriptor: Descriptor, name: str, values: list[str]) -> Any:
    found = query_field(descriptor, name)
    if found is None:
        raise InvalidArgument(f"unknown query parameter {shown(name)}")
    converted = [_scalar(found, value) for value in values]
    if found.is_repeated:
        return converted
    if len(converted) > 1:
        raise InvalidArgument(f"query parameter {name} is given {len(converted)} times")
    return converted[0]


def _scalar(found: FieldDescriptor, value: str) -> Any:
    if found.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise InvalidArgument(f"{found.name} must be true or false, not {shown(value)}")
        return value == "true"
    # json_format reads numbers and enum names from strings as they are.
    return value
