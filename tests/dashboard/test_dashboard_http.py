"""The dashboard over plain HTTP: pages, safety headers, CSRF and escaping (the browser specs
in test_dashboard_browser.py drive the same pages in Chromium)."""

from __future__ import annotations

import httpx
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from dashboard_forms import csrf_token

QUEUE = "emails"


async def enqueue(stub: rpc.CoordinatorServiceStub, payload: bytes = b"{}") -> str:
    reply = await stub.Enqueue(
        pb.EnqueueRequest(job=pb.JobSpec(queue=QUEUE, task_type="send", payload=payload))
    )
    return reply.job_id


async def test_every_page_loads_with_a_content_security_policy_without_inline_scripts(
    stub: rpc.CoordinatorServiceStub, http: httpx.AsyncClient
) -> None:
    job_id = await enqueue(stub)
    for path in (
        "/queues",
        f"/queues/{QUEUE}",
        f"/queues/{QUEUE}/graphs",
        "/jobs",
        f"/jobs?queue={QUEUE}&state=AVAILABLE&task_type=send",
        f"/jobs/{job_id}",
        "/dead",
        "/schedules",
    ):
        reply = await http.get(path)
        assert reply.status_code == 200, path
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in reply.text, path


async def test_a_post_without_the_form_token_is_refused(
    stub: rpc.CoordinatorServiceStub, http: httpx.AsyncClient
) -> None:
    await enqueue(stub)
    await http.get("/queues")  # sets the cookie
    reply = await http.post(f"/queues/{QUEUE}/pause", data={"csrf": "0" * 64})
    assert reply.status_code == 403
    queues = await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))
    assert not queues.paused


async def test_a_post_with_the_form_token_pauses_the_queue(
    stub: rpc.CoordinatorServiceStub, http: httpx.AsyncClient
) -> None:
    await enqueue(stub)
    token = csrf_token((await http.get("/queues")).text)
    reply = await http.post(f"/queues/{QUEUE}/pause", data={"csrf": token})
    assert reply.status_code == 303
    queue = await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))
    assert queue.paused


async def test_a_payload_is_shown_only_on_request_and_escaped(
    stub: rpc.CoordinatorServiceStub, http: httpx.AsyncClient
) -> None:
    job_id = await enqueue(stub, payload=b"<script>alert(1)</script>")
    plain = await http.get(f"/jobs/{job_id}")
    assert "alert(1)" not in plain.text
    shown = await http.get(f"/jobs/{job_id}?show=payload")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
    assert "<script>alert" not in shown.text


async def test_an_unknown_job_is_a_not_found_page(http: httpx.AsyncClient) -> None:
    reply = await http.get("/jobs/no-such-job")
    assert reply.status_code in (400, 404)


async def test_a_request_naming_another_host_is_refused(http: httpx.AsyncClient) -> None:
    # A page that rebinds its DNS name to 127.0.0.1 sends its own name as Host.
    reply = await http.get("/queues", headers={"host": "attacker.example:8080"})
    assert reply.status_code == 400
