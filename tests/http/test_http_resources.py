"""Schedules (also from POST /v1/jobs with cron), queues, task types and server info over
HTTP/JSON against a real coordinator."""

from __future__ import annotations

import httpx
from google.protobuf import descriptor_pb2, duration_pb2, json_format

CRON_JOB = {"queue": "reports", "task_type": "daily", "cron": "0 6 * * *", "timezone": "UTC"}


async def test_post_jobs_with_cron_creates_a_schedule_of_that_job(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.post("/v1/jobs", json={**CRON_JOB, "name": "daily-report"})

    assert reply.status_code == 200, reply.text
    schedule = (await http.get("/v1/schedules/daily-report")).json()
    assert schedule["cron"] == "0 6 * * *"
    assert schedule["job"]["queue"] == "reports"
    assert schedule["next_fire_at"].endswith("06:00:00Z")


async def test_post_jobs_with_cron_and_no_name_twice_is_already_exists(
    http: httpx.AsyncClient,
) -> None:
    first = await http.post("/v1/jobs", json=CRON_JOB)
    second = await http.post("/v1/jobs", json=CRON_JOB)

    assert first.json()["name"].startswith("job-")
    assert second.status_code == 409
    assert second.json()["code"] == 6


async def test_post_jobs_with_timezone_but_no_cron_is_refused(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", json={"queue": "q", "task_type": "t", "timezone": "UTC"})

    assert reply.status_code == 400
    assert "add cron" in reply.json()["message"]


async def test_post_jobs_with_a_bad_cron_names_the_problem(http: httpx.AsyncClient) -> None:
    reply = await http.post("/v1/jobs", json={**CRON_JOB, "cron": "61 * * * *"})

    assert reply.status_code == 400
    assert "cron" in reply.json()["message"]


async def test_schedule_lifecycle_create_list_patch_pause_resume_delete(
    http: httpx.AsyncClient,
) -> None:
    template = {"queue": "reports", "task_type": "daily"}
    created = await http.post(
        "/v1/schedules", json={"name": "s1", "cron": "*/5 * * * *", "job": template}
    )
    assert created.status_code == 200, created.text

    listed = (await http.get("/v1/schedules")).json()["schedules"]
    patched = await http.patch(
        "/v1/schedules/s1", params={"update_mask": "cron"}, json={"cron": "0 * * * *"}
    )
    paused = await http.post("/v1/schedules/s1:pause")
    resumed = await http.post("/v1/schedules/s1:resume")
    deleted = await http.delete("/v1/schedules/s1")
    gone = await http.get("/v1/schedules/s1")

    assert [s["name"] for s in listed] == ["s1"]
    assert patched.json()["cron"] == "0 * * * *"
    assert paused.json()["paused"] is True
    assert resumed.json()["paused"] is False
    assert deleted.json() == {}
    assert gone.status_code == 404


async def test_queue_patch_with_update_mask_pauses_it(http: httpx.AsyncClient) -> None:
    reply = await http.patch(
        "/v1/queues/mail", params={"update_mask": "paused"}, json={"paused": True}
    )

    assert reply.status_code == 200, reply.text
    assert (await http.get("/v1/queues/mail")).json()["paused"] is True


async def test_queue_patch_with_another_name_in_the_body_is_refused(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.patch("/v1/queues/mail", json={"name": "sms", "paused": True})

    assert reply.status_code == 400
    assert "queue.name is set twice" in reply.json()["message"]


async def test_list_queues_shows_a_queue_with_jobs(http: httpx.AsyncClient) -> None:
    await http.post("/v1/jobs", json={"queue": "mail", "task_type": "send"})

    queues = (await http.get("/v1/queues")).json()["queues"]

    [mail] = [q for q in queues if q["name"] == "mail"]
    assert mail["stats"]["available"] == "1"


async def test_task_type_register_get_and_list(http: httpx.AsyncClient) -> None:
    files = descriptor_pb2.FileDescriptorSet()
    duration_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    body = {
        "name": "wait",
        "version": "1.0.0",
        "message_type": "google.protobuf.Duration",
        "descriptors": json_format.MessageToDict(files),
    }

    registered = await http.post("/v1/task-types", json=body)
    fetched = await http.get("/v1/task-types/wait", params={"version": "1.0.0"})
    listed = await http.get("/v1/task-types")

    assert registered.status_code == 200, registered.text
    assert fetched.json()["message_type"] == "google.protobuf.Duration"
    assert [t["name"] for t in listed.json()["task_types"]] == ["wait"]


async def test_server_info_states_the_limits(http: httpx.AsyncClient) -> None:
    info = (await http.get("/v1/server-info")).json()

    assert info["max_payload_bytes"] == str(256 * 1024)
    assert info["max_lease_wait"] == "30s"
