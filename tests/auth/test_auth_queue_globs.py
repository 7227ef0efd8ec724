"""An admin token limited by queue globs (`--queues`), over a real coordinator with --auth, on
SQLite and PostgreSQL: ListQueues and ListSchedules show only the queues, and the schedules
whose job queue, the globs match, in full pages; a schedule outside them is NOT_FOUND in the
words of a missing schedule to every schedule RPC, and nothing is done to it; the HTTP/JSON
API answers the same."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import httpx
import pytest
from auth_support import MakeToken, bearer
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.config import ServerConfig
from conveyor_server.main import Coordinator
from conveyor_server.store.namespaced import FILTER_BATCH
from databases import DB_KINDS
from google.protobuf.field_mask_pb2 import FieldMask

pytestmark = pytest.mark.parametrize("db_kind", DB_KINDS)

CRON = "0 3 * * *"
# More refused rows than the store reads in one round, ahead of the matching ones: a page
# must go on reading past them rather than come back short.
REFUSED = FILTER_BATCH + 10


@pytest.fixture
def auth_config(server_config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(server_config, auth=True, http_listen="127.0.0.1:0")


@pytest.fixture
async def channel_(auth_coordinator: Coordinator) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(auth_coordinator.address) as channel:
        yield channel


class Admin:
    """One admin token's view of the coordinator."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.stub = rpc.CoordinatorServiceStub(channel)
        self.metadata = bearer(token)

    async def fill_queues(self, queues: Sequence[str]) -> None:
        jobs = [pb.JobSpec(queue=q, task_type="t", payload=b"p") for q in queues]
        await self.stub.EnqueueBatch(pb.EnqueueBatchRequest(jobs=jobs), metadata=self.metadata)

    async def create_schedule(self, name: str, queue: str) -> None:
        job = pb.JobSpec(queue=queue, task_type="t", payload=b"p")
        schedule = pb.Schedule(name=name, cron=CRON, job=job)
        await self.stub.CreateSchedule(
            pb.CreateScheduleRequest(schedule=schedule), metadata=self.metadata
        )

    async def queue_pages(self, page_size: int) -> list[list[str]]:
        return await self._pages("ListQueues", pb.ListQueuesRequest, "queues", page_size)

    async def schedule_pages(self, page_size: int) -> list[list[str]]:
        return await self._pages("ListSchedules", pb.ListSchedulesRequest, "schedules", page_size)

    async def _pages(
        self, method: str, request_type: Any, items: str, page_size: int
    ) -> list[list[str]]:
        """Every page of a List RPC, as the names on each, following next_page_token."""
        pages: list[list[str]] = []
        token = ""
        while True:
            reply = await getattr(self.stub, method)(
                request_type(page_size=page_size, page_token=token), metadata=self.metadata
            )
            pages.append([item.name for item in getattr(reply, items)])
            token = reply.next_page_token
            if not token:
                return pages

    async def refusal(self, method: str, request: object) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await getattr(self.stub, method)(request, metadata=self.metadata, timeout=10)
        return refused.value.code(), refused.value.details() or ""


@pytest.mark.parametrize("namespace", ["default", "team"])
@pytest.mark.parametrize("globs", [["billing-*-eu"], ["*-eu"]])
async def test_list_queues_shows_only_the_queues_the_globs_match_in_full_pages(
    channel_: grpc.aio.Channel, make_token: MakeToken, namespace: str, globs: list[str]
) -> None:
    owner = Admin(channel_, make_token("owner", "admin", namespace=namespace))
    eu = Admin(channel_, make_token("eu", "admin", queues=globs, namespace=namespace))
    matching = ["billing-000-eu", f"billing-{REFUSED - 5:03d}-eu", "billing-999-eu"]
    refused = [f"billing-{i:03d}-us" for i in range(REFUSED)] + ["mail", "zeta"]
    await owner.fill_queues(refused + matching)
    assert await eu.queue_pages(page_size=2) == [matching[:2], matching[2:]]


async def test_list_schedules_shows_only_the_schedules_of_queues_the_globs_match(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    owner = Admin(channel_, make_token("owner", "admin"))
    billing = Admin(channel_, make_token("billing", "admin", queues=["billing-*"]))
    for i in range(REFUSED):
        await owner.create_schedule(f"s-{i:03d}", "mail")
    matching = ["s-000b", f"s-{REFUSED - 5:03d}b", "s-999"]
    for name in matching:
        await owner.create_schedule(name, "billing-reports")
    assert await billing.schedule_pages(page_size=2) == [matching[:2], matching[2:]]


def schedule_calls(name: str) -> list[tuple[str, object]]:
    moved = pb.Schedule(name=name, job=pb.JobSpec(queue="billing-x", task_type="t"))
    return [
        ("GetSchedule", pb.GetScheduleRequest(name=name)),
        (
            "UpdateSchedule",
            pb.UpdateScheduleRequest(
                schedule=pb.Schedule(name=name, cron="0 4 * * *"),
                update_mask=FieldMask(paths=["cron"]),
            ),
        ),
        (
            "UpdateSchedule",
            pb.UpdateScheduleRequest(schedule=moved, update_mask=FieldMask(paths=["job"])),
        ),
        ("PauseSchedule", pb.PauseScheduleRequest(name=name)),
        ("ResumeSchedule", pb.ResumeScheduleRequest(name=name)),
        ("DeleteSchedule", pb.DeleteScheduleRequest(name=name)),
    ]


async def test_a_schedule_outside_the_globs_is_not_found_and_left_alone(
    channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    owner = Admin(channel_, make_token("owner", "admin"))
    billing = Admin(channel_, make_token("billing", "admin", queues=["billing-*"]))
    await owner.create_schedule("mail-digest", "mail")
    calls = zip(schedule_calls("mail-digest"), schedule_calls("absent"), strict=True)
    for (method, foreign), (_, missing) in calls:
        code, details = await billing.refusal(method, foreign)
        missing_code, missing_details = await billing.refusal(method, missing)
        assert (code, missing_code) == (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND)
        assert details == missing_details.replace("absent", "mail-digest"), method
    kept = await owner.stub.GetSchedule(
        pb.GetScheduleRequest(name="mail-digest"), metadata=owner.metadata
    )
    assert (kept.cron, kept.paused, kept.job.queue) == (CRON, False, "mail")


async def test_the_http_api_lists_and_finds_only_what_the_globs_match(
    auth_coordinator: Coordinator, channel_: grpc.aio.Channel, make_token: MakeToken
) -> None:
    owner = Admin(channel_, make_token("owner", "admin"))
    await owner.fill_queues(["billing-a", "mail"])
    await owner.create_schedule("invoices", "billing-a")
    await owner.create_schedule("mail-digest", "mail")
    token = make_token("billing", "admin", queues=["billing-*"])
    base = f"http://{auth_coordinator.http_address}"
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=20) as http:
        queues = (await http.get("/v1/queues")).json()["queues"]
        schedules = (await http.get("/v1/schedules")).json()["schedules"]
        foreign = await http.get("/v1/schedules/mail-digest")
        paused = await http.post("/v1/schedules/mail-digest:pause")
    assert [q["name"] for q in queues] == ["billing-a"]
    assert [s["name"] for s in schedules] == ["invoices"]
    assert (foreign.status_code, paused.status_code) == (404, 404)
