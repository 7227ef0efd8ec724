"""Jobs over HTTP/JSON against a real coordinator: enqueue (payload as JSON or base64, run_at,
delay, batch), read, list, cancel, retry and wait."""

from __future__ import annotations

import base64

import httpx


async def enqueue(http: httpx.AsyncClient, **job: object) -> str:
    reply = await http.post("/v1/jobs", json={"queue": "mail", "task_type": "send", **job})
    assert reply.status_code == 200, reply.text
    job_id: str = reply.json()["job_id"]
    return job_id


async def test_enqueue_with_payload_json_stores_its_utf8_json_text(
    http: httpx.AsyncClient,
) -> None:
    job_id = await enqueue(http, payload_json={"to": "ané@example.com", "n": [1, 2]})

    job = (await http.get(f"/v1/jobs/{job_id}")).json()

    stored = base64.b64decode(job["payload"]).decode()
    assert stored == '{"to":"ané@example.com","n":[1,2]}'
    assert job["state"] == "JOB_STATE_AVAILABLE"


async def test_enqueue_with_base64_payload_stores_the_bytes(http: httpx.AsyncClient) -> None:
    job_id = await enqueue(http, payload=base64.b64encode(b"\x00\xffraw").decode())

    job = (await http.get(f"/v1/jobs/{job_id}")).json()

    assert base64.b64decode(job["payload"]) == b"\x00\xffraw"


async def test_enqueue_reply_states_the_new_job(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", json={"queue": "mail", "task_type": "send"})

    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "job_id": reply.json()["job_id"],
        "deduplicated": False,
        "state": "JOB_STATE_AVAILABLE",
    }


async def test_enqueue_with_delay_is_scheduled(http: httpx.AsyncClient) -> None:
    job_id = await enqueue(http, delay="90s")

    job = (await http.get(f"/v1/jobs/{job_id}")).json()

    assert job["state"] == "JOB_STATE_SCHEDULED"
    assert job["delay"] == "90s"


async def test_enqueue_with_run_at_keeps_it(http: httpx.AsyncClient) -> None:
    job_id = await enqueue(http, run_at="2031-05-01T12:00:00Z")

    job = (await http.get(f"/v1/jobs/{job_id}")).json()

    assert job["run_at"] == "2031-05-01T12:00:00Z"
    assert job["state"] == "JOB_STATE_SCHEDULED"


async def test_enqueue_accepts_lower_camel_case_names(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", json={"queue": "mail", "taskType": "send"})

    job = (await http.get(f"/v1/jobs/{reply.json()['job_id']}")).json()
    assert job["task_type"] == "send"


async def test_enqueue_with_payload_and_payload_json_is_refused(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/v1/jobs", json={"queue": "mail", "task_type": "send", "payload": "", "payload_json": 1}
    )

    assert reply.status_code == 400
    assert reply.json()["message"] == "set payload (base64) or payload_json, not both"


async def test_enqueue_without_a_queue_names_the_field(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", json={"task_type": "send"})

    assert reply.status_code == 400
    assert reply.json()["code"] == 3
    assert "queue" in reply.json()["message"]


async def test_enqueue_batch_stores_every_job(http: httpx.AsyncClient) -> None:
    jobs = [{"queue": "mail", "task_type": "send"}, {"queue": "sms", "task_type": "send"}]

    reply = await http.post("/v1/jobs:batch", json={"jobs": jobs})

    assert reply.status_code == 200
    results = reply.json()["results"]
    assert [r["state"] for r in results] == ["JOB_STATE_AVAILABLE"] * 2


async def test_list_jobs_filters_by_queue_and_state_from_the_query(
    http: httpx.AsyncClient,
) -> None:
    now = await enqueue(http)
    await enqueue(http, delay="60s")
    await http.post("/v1/jobs", json={"queue": "other", "task_type": "send"})

    reply = await http.get("/v1/jobs", params={"queue": "mail", "state": "JOB_STATE_AVAILABLE"})

    assert reply.status_code == 200
    assert [j["job_id"] for j in reply.json()["jobs"]] == [now]


async def test_list_jobs_pages_with_page_size_and_page_token(http: httpx.AsyncClient) -> None:
    ids = [await enqueue(http) for _ in range(3)]

    first = (await http.get("/v1/jobs", params={"page_size": "2"})).json()
    second = (
        await http.get("/v1/jobs", params={"page_size": 2, "page_token": first["next_page_token"]})
    ).json()

    listed = [j["job_id"] for j in first["jobs"] + second["jobs"]]
    assert sorted(listed) == sorted(ids)
    assert second["next_page_token"] == ""


async def test_list_jobs_full_view_carries_payloads(http: httpx.AsyncClient) -> None:
    await enqueue(http, payload_json="hi")

    basic = (await http.get("/v1/jobs")).json()["jobs"][0]
    full = (await http.get("/v1/jobs", params={"view": "JOB_VIEW_FULL"})).json()["jobs"][0]

    assert basic["payload"] == ""
    assert base64.b64decode(full["payload"]) == b'"hi"'


async def test_get_unknown_job_is_404_with_a_status_body(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v1/jobs/nope")

    assert reply.status_code == 404
    assert reply.json() == {"code": 5, "message": "job 'nope' not found", "details": []}


async def test_cancel_then_retry_makes_the_job_available_again(http: httpx.AsyncClient) -> None:
    job_id = await enqueue(http)

    cancelled = await http.post(f"/v1/jobs/{job_id}:cancel")
    retried = await http.post(f"/v1/jobs/{job_id}:retry", json={})

    assert cancelled.json()["state"] == "JOB_STATE_CANCELLED"
    assert retried.json()["state"] == "JOB_STATE_AVAILABLE"


async def test_retry_of_an_available_job_is_failed_precondition_400(
    http: httpx.AsyncClient,
) -> None:
    job_id = await enqueue(http)

    reply = await http.post(f"/v1/jobs/{job_id}:retry")

    assert reply.status_code == 400
    assert reply.json()["code"] == 9


async def test_wait_returns_a_terminal_job_at_once(http: httpx.AsyncClient) -> None:
    job_id = await enqueue(http)
    await http.post(f"/v1/jobs/{job_id}:cancel")

    reply = await http.post(f"/v1/jobs/{job_id}:wait", json={"timeout": "5s"})

    assert reply.status_code == 200
    assert reply.json()["state"] == "JOB_STATE_CANCELLED"


async def test_wait_with_a_job_id_in_the_body_unlike_the_path_is_refused(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/v1/jobs/abc:wait", json={"job_id": "xyz"})

    assert reply.status_code == 400
    assert "job_id is set twice" in reply.json()["message"]


async def test_enqueue_repeated_with_an_idempotency_key_is_deduplicated(
    http: httpx.AsyncClient,
) -> None:
    job = {"queue": "mail", "task_type": "send", "idempotency_key": "k1", "payload_json": 1}

    first = (await http.post("/v1/jobs", json=job)).json()
    second = (await http.post("/v1/jobs", json=job)).json()

    assert second == {**first, "deduplicated": True}


async def test_enqueue_reusing_an_idempotency_key_for_other_content_is_409(
    http: httpx.AsyncClient,
) -> None:
    job = {"queue": "mail", "task_type": "send", "idempotency_key": "k1"}
    await http.post("/v1/jobs", json={**job, "payload_json": 1})

    reply = await http.post("/v1/jobs", json={**job, "payload_json": 2})

    assert reply.status_code == 409
    assert reply.json()["code"] == 6


async def test_the_traceparent_header_is_stored_with_the_job(http: httpx.AsyncClient) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    reply = await http.post(
        "/v1/jobs",
        json={"queue": "traced", "task_type": "send"},
        headers={"traceparent": traceparent},
    )
    job = (await http.get(f"/v1/jobs/{reply.json()['job_id']}")).json()
    assert job["traceparent"] == traceparent
