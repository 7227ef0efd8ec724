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


async def test_jobs_are_found_by_idempotency_key_in_any_queue(
    stub: rpc.CoordinatorServiceStub, http: httpx.AsyncClient
) -> None:
    keyed = {}
    for queue, key in (("emails", "order-17"), ("invoices", "order-18")):
        spec = pb.JobSpec(queue=queue, task_type="send", idempotency_key=key)
        keyed[key] = (await stub.Enqueue(pb.EnqueueRequest(job=spec))).job_id
    plain = await enqueue(stub)

    found = (await http.get("/jobs", params={"key": "order-18"})).text
    assert keyed["order-18"] in found
    assert keyed["order-17"] not in found and plain not in found
    in_queue = (await http.get("/jobs", params={"key": "order-18", "queue": "emails"})).text
    assert keyed["order-18"] not in in_queue


async def test_a_job_page_lists_the_jobs_children(
    stub: rpc.CoordinatorServiceStub, http: httpx.AsyncClient
) -> None:
    parent = await enqueue(stub)
    children = [
        (
            await stub.Enqueue(
                pb.EnqueueRequest(
                    job=pb.JobSpec(queue="steps", task_type="step", parent_job_id=parent)
                )
            )
        ).job_id
        for _ in range(2)
    ]
    stranger = await enqueue(stub)

    page = (await http.get(f"/jobs/{parent}")).text
    assert all(f"/jobs/{child}" in page for child in children)
    assert stranger not in page
    listed = (await http.get("/jobs", params={"parent": parent})).text
    assert all(child in listed for child in children) and stranger not in listed
    assert "None." in (await http.get(f"/jobs/{children[0]}")).text
