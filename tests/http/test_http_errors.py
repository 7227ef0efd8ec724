"""The HTTP API's error model: google.rpc.Status bodies with the google.rpc HTTP status,
malformed JSON named, long values cut short, bodies over the limit refused with 413."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
from conveyor_server.api.http.routes import ROUTES, SERVICE
from conveyor_server.api.http.transcode import HTTP_STATUS
from http_wire import TEST_MAX_BODY_BYTES


def test_every_rpc_of_the_service_has_one_route() -> None:
    assert sorted(route.rpc for route in ROUTES) == sorted(SERVICE.methods_by_name)


def test_status_codes_map_to_the_google_rpc_http_statuses() -> None:
    code = grpc.StatusCode
    assert HTTP_STATUS[code.INVALID_ARGUMENT] == 400
    assert HTTP_STATUS[code.FAILED_PRECONDITION] == 400
    assert HTTP_STATUS[code.NOT_FOUND] == 404
    assert HTTP_STATUS[code.ALREADY_EXISTS] == 409
    assert HTTP_STATUS[code.RESOURCE_EXHAUSTED] == 429
    assert HTTP_STATUS[code.UNAUTHENTICATED] == 401
    assert HTTP_STATUS[code.PERMISSION_DENIED] == 403
    assert HTTP_STATUS[code.UNAVAILABLE] == 503
    assert HTTP_STATUS[code.INTERNAL] == 500
    assert HTTP_STATUS[code.DEADLINE_EXCEEDED] == 504


async def test_malformed_json_is_400_naming_the_problem(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", content=b'{"queue": "mail",')

    assert reply.status_code == 400
    assert reply.json()["code"] == 3
    assert reply.json()["message"].startswith("request body is not valid JSON: Expecting")
    assert reply.json()["details"] == []


async def test_a_body_that_is_not_an_object_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/leases", content=b"[1, 2]")

    assert reply.status_code == 400
    assert reply.json()["message"] == "request body must be a JSON object, not list"


async def test_an_unknown_field_is_400_naming_it(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/leases", json={"worker_id": "w", "queue": "mail"})

    assert reply.status_code == 400
    assert "queue" in reply.json()["message"]


async def test_a_wrongly_typed_value_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/leases", json={"worker_id": "w", "max_jobs": "many"})

    assert reply.status_code == 400
    assert "max_jobs" in reply.json()["message"]


async def test_a_20000_character_queue_name_is_400_with_a_short_message(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/v1/jobs", json={"queue": "q" * 20_000, "task_type": "t"})

    assert reply.status_code == 400
    assert "queue" in reply.json()["message"]
    assert len(reply.json()["message"]) < 300


async def test_a_20000_character_enum_value_is_400_with_a_short_message(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get("/v1/jobs", params={"state": "X" * 20_000})

    assert reply.status_code == 400
    assert len(reply.json()["message"]) < 300


async def test_a_20000_character_path_value_is_400_with_a_short_message(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get("/v1/queues/" + "q" * 20_000)

    assert reply.status_code == 400
    assert len(reply.json()["message"]) < 300


async def test_a_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    body = b'{"queue": "' + b"q" * TEST_MAX_BODY_BYTES + b'"}'

    reply = await http.post("/v1/jobs", content=body)

    assert reply.status_code == 413
    assert reply.json()["code"] == 8
    assert str(TEST_MAX_BODY_BYTES) in reply.json()["message"]


async def test_a_chunked_body_over_the_limit_is_413(http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (TEST_MAX_BODY_BYTES // 2)

    reply = await http.post("/v1/jobs", content=chunks())

    assert reply.status_code == 413


async def test_an_unknown_path_is_404(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v2/jobs")

    assert reply.status_code == 404
    assert reply.json()["code"] == 5


async def test_a_wrong_verb_is_405_naming_the_allowed_ones(http: httpx.AsyncClient) -> None:
    reply = await http.delete("/v1/jobs/abc")

    assert reply.status_code == 405
    assert reply.json()["message"] == "DELETE is not allowed on this path; use GET"


async def test_an_unknown_query_parameter_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v1/jobs", params={"queeue": "mail"})

    assert reply.status_code == 400
    assert reply.json()["message"] == "unknown query parameter 'queeue'"


async def test_a_body_on_a_get_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.request("GET", "/v1/server-info", content=b"{}")

    assert reply.status_code == 400


async def test_json_nested_past_the_parser_depth_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", content=b"[" * 60_000)

    assert reply.status_code == 400
    assert reply.json()["message"] == "request body is not valid JSON: nested too deeply"


async def test_a_body_that_is_not_utf8_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", content=b'{"queue": "\xff"}')

    assert reply.status_code == 400
    assert reply.json()["message"] == "request body is not UTF-8 JSON"


async def test_a_path_that_is_not_utf8_once_decoded_is_400(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v1/jobs/%ff")

    assert reply.status_code == 400
    assert reply.json()["code"] == 3


async def test_nan_in_a_body_is_400_as_json_has_no_nan(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/v1/jobs", content=b'{"queue": "q", "task_type": "t", "payload_json": NaN}'
    )

    assert reply.status_code == 400
    assert reply.json()["message"] == "request body is not valid JSON: NaN is not a JSON value"
