"""The gRPC servicer of conveyor.v1.CoordinatorService: validate, call the core, build the
reply. No business rules and no SQL here."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import structlog
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from google.protobuf import empty_pb2

from conveyor_server.api import convert, validation
from conveyor_server.api.caller import CALLER_SCOPE
from conveyor_server.api.errors import status_for, status_number
from conveyor_server.core.jobs import JobService
from conveyor_server.core.model import HeartbeatParams, ReceiptParams
from conveyor_server.core.queues import QueueService
from conveyor_server.core.schedule_service import ScheduleService
from conveyor_server.core.scoped import Namespaced, Services
from conveyor_server.core.task_types import TaskTypeService
from conveyor_server.errors import ConveyorError

log = structlog.get_logger("conveyor.api")

Request = TypeVar("Request")
Reply = TypeVar("Reply")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext[Request, Reply]], Awaitable[Reply]]


def _reports_errors(method: Handler[Request, Reply]) -> Handler[Request, Reply]:
    """Maps a ConveyorError to its status code (api/errors.py) and the caller's message."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Request, context: grpc.aio.ServicerContext[Request, Reply]
    ) -> Reply:
        try:
            return await method(self, request, context)
        except ConveyorError as error:
            # Names in the message as the caller knows them (without its namespace).
            await context.abort(status_for(error), CALLER_SCOPE.get().unqualify_text(str(error)))
            raise  # unreachable: abort raises
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Internals (SQL, paths) stay in the log; the caller learns only that it failed.
            log.error("rpc.failed", method=method.__name__, error=repr(error), exc_info=True)
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal error in the coordinator; see its log"
            )
            raise

    return wrapper


class CoordinatorServicer(rpc.CoordinatorServiceServicer):
    def __init__(
        self,
        jobs: JobService,
        queues: QueueService,
        schedules: ScheduleService,
        task_types: TaskTypeService,
        limits: validation.Limits,
    ) -> None:
        self._services = Services(jobs, queues, schedules, task_types)
        self._limits = limits

    @property
    def _in(self) -> Namespaced:
        """The services within the caller's scope: every handler goes through them."""
        return Namespaced(self._services, CALLER_SCOPE.get())

    @_reports_errors
    async def Enqueue(
        self, request: pb.EnqueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnqueueResponse:
        spec = validation.job_spec(request.job, self._limits)
        spec = validation.traced(spec, context.invocation_metadata())
        return convert.enqueue_response(await self._in.enqueue(spec))

    @_reports_errors
    async def EnqueueBatch(
        self, request: pb.EnqueueBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EnqueueBatchResponse:
        specs = validation.job_specs(list(request.jobs), self._limits)
        metadata = context.invocation_metadata()
        if validation.traceparent(metadata) is not None:
            specs = [validation.traced(spec, metadata) for spec in specs]
        results = await self._in.enqueue_batch(specs)
        return pb.EnqueueBatchResponse(results=[convert.enqueue_response(r) for r in results])

    @_reports_errors
    async def Lease(
        self, request: pb.LeaseRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LeaseResponse:
        params = validation.lease(request)
        wait = params.wait_seconds
        remaining = context.time_remaining()
        if remaining is not None:
            # A long-poll ends empty half a second before the caller's deadline: a reply with
            # jobs that reached the caller after it would lease them to nobody.
            wait = min(wait, max(remaining - 0.5, 0.0))
        scoped = self._in
        leased = await scoped.lease(
            params.worker_id,
            params.queues,
            params.max_jobs,
            wait,
            task_types=params.task_types,
            reply_limit=validation.reply_limit(request.max_reply_bytes, self._limits),
            confirm_within=params.confirm_within,
        )
        if not leased:
            return pb.LeaseResponse()
        # The claim has committed; if the caller has gone meanwhile (cancel, deadline, broken
        # connection), the reply would lease the jobs to nobody and cost them an attempt.
        # grpc.aio tells a unary handler of a cancel only while it runs (as CancelledError),
        # never after it returns (a done callback sees cancelled() == False), so ask the
        # transport before replying: sending the headers fails, or lets the cancel in, when
        # the call has ended. A cancel still in flight after this point is not seen; the
        # caller's library then drops the reply, and only lease confirmation (confirm) gets
        # those jobs back before their lease expires.
        try:
            reply = pb.LeaseResponse(jobs=[convert.leased_job(job) for job in leased])
            await context.send_initial_metadata(())
        except grpc.aio.BaseError:
            await scoped.hand_back(leased)
            raise asyncio.CancelledError from None
        except BaseException:
            await scoped.hand_back(leased)
            raise
        return reply

    @_reports_errors
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        [outcome] = await self._in.heartbeat([validation.heartbeat(request, self._limits)])
        if isinstance(outcome, ConveyorError):
            raise outcome
        return convert.heartbeat_response(outcome)

    @_reports_errors
    async def HeartbeatBatch(
        self, request: pb.HeartbeatBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatBatchResponse:
        validation.batch_size(request.heartbeats, "heartbeats")
        parsed = _each(
            request.heartbeats,
            lambda item, i: validation.batched_heartbeat(item, self._limits, f"heartbeats[{i}]."),
        )
        valid: list[HeartbeatParams] = [p for p in parsed if isinstance(p, HeartbeatParams)]
        outcomes = iter(await self._in.heartbeat(valid) if valid else [])
        results = []
        for item in parsed:
            outcome = item if isinstance(item, ConveyorError) else next(outcomes)
            if isinstance(outcome, ConveyorError):
                results.append(
                    pb.HeartbeatResult(code=status_number(outcome), message=str(outcome))
                )
            else:
                results.append(pb.HeartbeatResult(response=convert.heartbeat_response(outcome)))
        return pb.HeartbeatBatchResponse(results=results)

    @_reports_errors
    async def Receipt(
        self, request: pb.ReceiptRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReceiptResponse:
        [outcome] = await self._in.receipt([validation.receipt(request, self._limits)])
        if isinstance(outcome, ConveyorError):
            raise outcome
        return convert.receipt_response(outcome)

    @_reports_errors
    async def ReceiptBatch(
        self, request: pb.ReceiptBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReceiptBatchResponse:
        validation.batch_size(request.receipts, "receipts")
        parsed = _each(
            request.receipts,
            lambda item, i: validation.receipt(item, self._limits, f"receipts[{i}]."),
        )
        valid: list[ReceiptParams] = [p for p in parsed if isinstance(p, ReceiptParams)]
        outcomes = iter(await self._in.receipt(valid) if valid else [])
        results = []
        for item in parsed:
            outcome = item if isinstance(item, ConveyorError) else next(outcomes)
            if isinstance(outcome, ConveyorError):
                results.append(pb.ReceiptResult(code=status_number(outcome), message=str(outcome)))
            else:
                results.append(pb.ReceiptResult(response=convert.receipt_response(outcome)))
        return pb.ReceiptBatchResponse(results=results)

    @_reports_errors
    async def GetJob(
        self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Job:
        return convert.job(await self._in.get(validation.job_id(request.job_id)))

    @_reports_errors
    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        params = validation.list_jobs(request, self._limits)
        page = await self._in.list_jobs(params)
        jobs = page.jobs
        next_token = validation.encode_page_token(jobs[-1].job_id) if page.more and jobs else ""
        return pb.ListJobsResponse(jobs=[convert.job(j) for j in jobs], next_page_token=next_token)

    @_reports_errors
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Job:
        return convert.job(await self._in.cancel(validation.job_id(request.job_id)))

    @_reports_errors
    async def RetryJob(
        self, request: pb.RetryJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Job:
        return convert.job(await self._in.retry(validation.job_id(request.job_id)))

    @_reports_errors
    async def WaitJob(
        self, request: pb.WaitJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Job:
        timeout = validation.wait_timeout_seconds(request)
        return convert.job(await self._in.wait(validation.job_id(request.job_id), timeout))

    # -- schedules ---------------------------------------------------------------------------

    @_reports_errors
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        spec = validation.schedule_spec(request.schedule, self._limits)
        return convert.schedule(await self._in.create_schedule(spec))

    @_reports_errors
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        return convert.schedule(await self._in.get_schedule(validation.name(request.name, "name")))

    @_reports_errors
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListSchedulesResponse:
        size = validation.page_size(request.page_size)
        after = validation.page_after(request.page_token, "ListSchedules")
        found = await self._in.list_schedules(after, size)
        token = validation.encode_page_token(found[-1].spec.name) if len(found) == size else ""
        return pb.ListSchedulesResponse(
            schedules=[convert.schedule(s) for s in found], next_page_token=token
        )

    @_reports_errors
    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        name, change = validation.schedule_update(request, self._limits)
        return convert.schedule(await self._in.update_schedule(name, change))

    @_reports_errors
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> empty_pb2.Empty:
        await self._in.delete_schedule(validation.name(request.name, "name"))
        return empty_pb2.Empty()

    @_reports_errors
    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        name = validation.name(request.name, "name")
        return convert.schedule(await self._in.set_schedule_paused(name, True))

    @_reports_errors
    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Schedule:
        name = validation.name(request.name, "name")
        return convert.schedule(await self._in.set_schedule_paused(name, False))

    # -- queues ------------------------------------------------------------------------------

    @_reports_errors
    async def GetQueue(
        self, request: pb.GetQueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Queue:
        return convert.queue(await self._in.get_queue(validation.name(request.name, "name")))

    @_reports_errors
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListQueuesResponse:
        size = validation.page_size(request.page_size)
        after = validation.page_after(request.page_token, "ListQueues")
        found = await self._in.list_queues(after, size)
        token = validation.encode_page_token(found[-1].config.name) if len(found) == size else ""
        return pb.ListQueuesResponse(
            queues=[convert.queue(q) for q in found], next_page_token=token
        )

    @_reports_errors
    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.Queue:
        name, change = validation.queue_update(request)
        return convert.queue(await self._in.update_queue(name, change))

    # -- task contracts ----------------------------------------------------------------------

    @_reports_errors
    async def RegisterTaskType(
        self, request: pb.RegisterTaskTypeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TaskType:
        r = validation.register_task_type(request)
        stored = await self._in.register_task_type(r.name, r.version, r.message_type, r.descriptors)
        return convert.task_type(stored)

    @_reports_errors
    async def GetTaskType(
        self, request: pb.GetTaskTypeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TaskType:
        task_name, version = validation.task_type_key(request)
        return convert.task_type(await self._in.get_task_type(task_name, version))

    @_reports_errors
    async def ListTaskTypes(
        self, request: pb.ListTaskTypesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListTaskTypesResponse:
        limit = validation.page_size(request.page_size)
        after = (
            validation.decode_task_type_token(request.page_token) if request.page_token else None
        )
        found = await self._in.list_task_types(after, limit + 1)
        reply = pb.ListTaskTypesResponse(task_types=[convert.task_type(t) for t in found[:limit]])
        if len(found) > limit:
            last = found[limit - 1]
            reply.next_page_token = validation.encode_task_type_token(last.name, last.version)
        return reply

    # -- server information ------------------------------------------------------------------

    @_reports_errors
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerInfo:
        return validation.server_info(self._limits)


T = TypeVar("T")
P = TypeVar("P")


def _each(items: Sequence[T], parse: Callable[[T, int], P]) -> list[P | ConveyorError]:
    """Parses each item of a batch on its own, so one bad item fails only itself."""
    parsed: list[P | ConveyorError] = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse(item, index))
        except ConveyorError as error:
            parsed.append(error)
    return parsed
