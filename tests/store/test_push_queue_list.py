"""The pusher's view of the queues (issue 12): the push queues only, with their settings and
no job counts, a page at a time."""

from __future__ import annotations

from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from store_support import store_of


async def update(stub: rpc.CoordinatorServiceStub, queue: pb.Queue, *paths: str) -> None:
    await stub.UpdateQueue(pb.UpdateQueueRequest(queue=queue, update_mask=FieldMask(paths=paths)))


async def test_only_push_queues_are_listed_with_their_targets(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    target = pb.PushTarget(
        url="http://fn.local/run", timeout=Duration(seconds=7), signing_secret="s"
    )
    await update(stub, pb.Queue(name="a-push", push=target), "push")
    await update(stub, pb.Queue(name="b-pull", max_concurrency=3), "max_concurrency")
    await update(stub, pb.Queue(name="c-paused", push=target, paused=True), "push", "paused")
    await stub.Enqueue(pb.EnqueueRequest(job=pb.JobSpec(queue="d-implicit", task_type="t")))
    store = store_of(coordinator)

    listed = await store.list_push_queues(None, 10)

    assert [(q.name, q.paused) for q in listed] == [("a-push", False), ("c-paused", True)]
    push = listed[0].push
    assert push is not None
    assert (push.url, push.timeout, push.signing_secret) == ("http://fn.local/run", 7_000_000, "s")


async def test_push_queues_are_listed_a_page_at_a_time(
    coordinator: Coordinator, stub: rpc.CoordinatorServiceStub
) -> None:
    target = pb.PushTarget(url="http://fn.local/run")
    for name in ("q3", "q1", "pull", "q2"):
        queue = pb.Queue(name=name) if name == "pull" else pb.Queue(name=name, push=target)
        await update(stub, queue, "paused" if name == "pull" else "push")
    store = store_of(coordinator)

    first = await store.list_push_queues(None, 2)
    rest = await store.list_push_queues(first[-1].name, 2)

    assert [q.name for q in first] == ["q1", "q2"]
    assert [q.name for q in rest] == ["q3"]
