"""A worker's calls over HTTP/JSON: lease, heartbeat, receipt (one and batched), fenced by the
lease token as over gRPC."""

from __future__ import annotations

import base64
from typing import Any

import httpx


async def leased(http: httpx.AsyncClient) -> dict[str, Any]:
    await http.post("/v1/jobs", json={"queue": "mail", "task_type": "send", "payload_json": 7})
    reply = await http.post("/v1/leases", json={"worker_id": "w1", "queues": ["mail"]})
    assert reply.status_code == 200, reply.text
    [job] = reply.json()["jobs"]
    return dict(job)


async def test_lease_hands_out_the_job_with_a_token(http: httpx.AsyncClient) -> None:
    job = await leased(http)

    assert job["attempt"] == 1
    assert len(job["lease_token"]) == 32
    assert base64.b64decode(job["payload"]) == b"7"


async def test_lease_of_an_empty_queue_without_wait_returns_no_jobs(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/v1/leases", json={"worker_id": "w1", "queues": ["empty"]})

    assert reply.json() == {"jobs": []}


async def test_heartbeat_extends_the_lease_and_reports_no_cancel(
    http: httpx.AsyncClient,
) -> None:
    job = await leased(http)

    reply = await http.post(
        f"/v1/jobs/{job['job_id']}:heartbeat",
        json={"lease_token": job["lease_token"], "extend_by": "120s"},
    )

    assert reply.status_code == 200
    assert reply.json()["cancel_requested"] is False
    assert reply.json()["lease_expires_at"] > job["lease_expires_at"]


async def test_heartbeat_with_a_wrong_token_is_failed_precondition(
    http: httpx.AsyncClient,
) -> None:
    job = await leased(http)

    reply = await http.post(f"/v1/jobs/{job['job_id']}:heartbeat", json={"lease_token": "f" * 32})

    assert reply.status_code == 400
    assert reply.json()["code"] == 9


async def test_receipt_success_stores_the_result(http: httpx.AsyncClient) -> None:
    job = await leased(http)

    reply = await http.post(
        f"/v1/jobs/{job['job_id']}:receipt",
        json={
            "lease_token": job["lease_token"],
            "outcome": "OUTCOME_SUCCESS",
            "result": base64.b64encode(b"done").decode(),
        },
    )

    assert reply.status_code == 200
    assert reply.json()["state"] == "JOB_STATE_SUCCEEDED"
    stored = (await http.get(f"/v1/jobs/{job['job_id']}")).json()
    assert base64.b64decode(stored["result"]) == b"done"


async def test_receipt_failure_schedules_a_retry(http: httpx.AsyncClient) -> None:
    job = await leased(http)

    reply = await http.post(
        f"/v1/jobs/{job['job_id']}:receipt",
        json={
            "lease_token": job["lease_token"],
            "outcome": "OUTCOME_FAILURE",
            "error": {"message": "smtp down"},
            "retry_after": "10s",
        },
    )

    assert reply.json()["state"] == "JOB_STATE_SCHEDULED"
    assert reply.json()["next_run_at"]


async def test_receipt_batch_judges_each_item(http: httpx.AsyncClient) -> None:
    job = await leased(http)
    good = {
        "job_id": job["job_id"],
        "lease_token": job["lease_token"],
        "outcome": "OUTCOME_SUCCESS",
    }
    bad = {"job_id": "", "lease_token": "x", "outcome": "OUTCOME_SUCCESS"}

    reply = await http.post("/v1/receipts:batch", json={"receipts": [good, bad]})

    [first, second] = reply.json()["results"]
    assert first["code"] == 0 and first["response"]["state"] == "JOB_STATE_SUCCEEDED"
    assert second["code"] == 3


async def test_heartbeat_batch_judges_each_item(http: httpx.AsyncClient) -> None:
    job = await leased(http)
    good = {"job_id": job["job_id"], "lease_token": job["lease_token"]}
    lost = {"job_id": job["job_id"], "lease_token": "0" * 32}

    reply = await http.post("/v1/heartbeats:batch", json={"heartbeats": [good, lost]})

    assert [r["code"] for r in reply.json()["results"]] == [0, 9]


async def test_a_lease_with_confirmation_is_confirmed_by_a_heartbeat(
    http: httpx.AsyncClient,
) -> None:
    await http.post(
        "/v1/jobs", json={"queue": "mail", "task_type": "send", "lease_duration": "600s"}
    )
    reply = await http.post(
        "/v1/leases",
        json={"worker_id": "w1", "queues": ["mail"], "confirm": True, "confirm_within": "2s"},
    )
    assert reply.status_code == 200, reply.text
    [job] = reply.json()["jobs"]
    confirmed = await http.post(
        f"/v1/jobs/{job['job_id']}:heartbeat", json={"lease_token": job["lease_token"]}
    )

    assert confirmed.status_code == 200, confirmed.text
    # The window was 2 s; the confirmation granted the job's full 600 s lease.
    assert confirmed.json()["lease_expires_at"] > job["lease_expires_at"]


async def test_confirm_within_without_confirm_is_refused(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/v1/leases", json={"worker_id": "w1", "queues": ["mail"], "confirm_within": "2s"}
    )

    assert reply.status_code == 400
    assert "confirm_within is set but confirm is false" in reply.text
