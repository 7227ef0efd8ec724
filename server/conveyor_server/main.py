"""The composition root: the only place that wires store, core, maintenance and API together."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from conveyor.v1 import coordinator_pb2 as pb
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from conveyor_server.api.auth import AuthInterceptor, AuthSettings, Gate, PrincipalCache
from conveyor_server.api.http.app import HttpApi
from conveyor_server.api.http.guard import BearerGuard
from conveyor_server.api.http.server import HttpServer
from conveyor_server.api.limits import PrincipalLimits, PrincipalLimitsConfig
from conveyor_server.api.registration import add_coordinator_servicer
from conveyor_server.api.rpc_metrics import RpcMetricsInterceptor
from conveyor_server.api.servicer import CoordinatorServicer
from conveyor_server.api.validation import Limits, job_template_queue, job_template_reader
from conveyor_server.config import MAX_MESSAGE_BYTES, ServerConfig
from conveyor_server.core.broadcast import BroadcastWakeups
from conveyor_server.core.clock import Clock, SystemClock
from conveyor_server.core.jobs import JobService, JobServiceConfig
from conveyor_server.core.notify import DueTimeAlarm, JobFinished, QueueWakeups
from conveyor_server.core.queues import QueueService
from conveyor_server.core.schedule_service import ScheduleService
from conveyor_server.core.task_types import TaskTypeService
from conveyor_server.encryption import AesGcmCodec
from conveyor_server.logs import configure_logging
from conveyor_server.maintenance.cron import CronConfig, CronFirer
from conveyor_server.maintenance.leader import Leadership, holder_id
from conveyor_server.maintenance.pruner import Pruner
from conveyor_server.maintenance.pusher import Pusher, PusherConfig
from conveyor_server.maintenance.reaper import Reaper
from conveyor_server.maintenance.waker import Waker
from conveyor_server.observability.http import HttpServer as EndpointServer
from conveyor_server.observability.metrics import PrometheusMetrics
from conveyor_server.store import dialects
from conveyor_server.store.dialects import PoolSettings
from conveyor_server.store.sql import SqlStore
from conveyor_server.store.tokens import TokenStore

log = structlog.get_logger("conveyor.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CoordinatorService"].full_name


@dataclass
class Coordinator:
    config: ServerConfig
    address: str
    jobs: JobService
    reaper: Reaper
    waker: Waker
    cron: CronFirer
    pruner: Pruner
    pusher: Pusher
    _server: grpc.aio.Server
    _health: HealthServicer
    _store: SqlStore
    _endpoints: list[EndpointServer] = field(default_factory=list)
    _tokens: TokenStore | None = None
    _stopped: bool = False
    # host:port of the HTTP/JSON API when --http-listen is given.
    http_address: str | None = None
    _http: HttpServer | None = None

    @classmethod
    async def start(cls, config: ServerConfig, clock: Clock | None = None) -> Coordinator:
        configure_logging(config.log_format, config.log_level)
        clock = clock or SystemClock()
        health = HealthServicer()
        store = SqlStore(
            config.db_url,
            sqlite_synchronous=config.sqlite_synchronous,
            recount_queues=config.recount_queues,
            max_write_batch=config.max_write_batch,
            on_write_health=_HealthReporter(health).store_writable,
            pool=PoolSettings(
                size=config.db_pool_size,
                statement_timeout_ms=round(config.db_statement_timeout_seconds * 1000),
            ),
            blobs=AesGcmCodec(config.encryption) if config.encryption else None,
        )
        await store.open()
        # Recorded only when something shows it: otherwise the hooks are no-ops.
        observed = config.metrics_listen is not None or config.dashboard_listen is not None
        metrics = PrometheusMetrics(clock.now) if observed else None
        scheduled_alarm, expiry_alarm = DueTimeAlarm(), DueTimeAlarm()
        holder = holder_id()
        wakeups: QueueWakeups = QueueWakeups()
        if dialects.is_postgresql(config.db_url):
            # Other coordinators may enqueue for the long-polls here, and the reverse.
            shared = BroadcastWakeups(functools.partial(store.publish_wakeups, holder))
            store.listen_for_wakeups(holder, shared.heard)
            wakeups = shared
        task_types = TaskTypeService(store, clock)
        jobs = JobService(
            store,
            clock,
            JobServiceConfig(max_depth=config.max_depth),
            wakeups=wakeups,
            finished=JobFinished(),
            scheduled_alarm=scheduled_alarm,
            expiry_alarm=expiry_alarm,
            task_types=task_types,
            metrics=metrics,
        )
        tokens = TokenStore(config.db_url) if config.auth else None
        # One gate for every transport: gRPC, HTTP/JSON, metrics and dashboard.
        gate = _gate(config, tokens)
        server = grpc.aio.server(
            interceptors=[
                *([RpcMetricsInterceptor(metrics.rpc_finished)] if metrics else []),
                *_interceptors(config, gate),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # Refuse to share a port with a still-running coordinator.
                ("grpc.so_reuseport", 0),
            ],
        )
        cron_alarm, prune_alarm = DueTimeAlarm(), DueTimeAlarm()

        def limits_changed(queue: str) -> None:
            jobs.forget_limits(queue)
            pusher.queue_changed(queue)

        queues = QueueService(store, clock, wakeups, limits_changed=limits_changed)
        pusher = Pusher(
            jobs,
            queues.list_push,
            clock,
            PusherConfig(
                worker_id=f"push:{socket.gethostname()}:{os.getpid()}",
                max_result_bytes=config.max_payload_bytes,
            ),
        )
        limits = Limits(
            max_payload_bytes=config.max_payload_bytes, max_message_bytes=MAX_MESSAGE_BYTES
        )
        schedules = ScheduleService(
            store,
            clock,
            cron_alarm,
            read_template=job_template_reader(limits),
            template_queue=job_template_queue,
        )
        servicer = CoordinatorServicer(jobs, queues, schedules, task_types, limits)
        add_coordinator_servicer(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            [
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        try:
            credentials = _server_credentials(config)
            if credentials is None:
                port = server.add_insecure_port(config.listen)
            else:
                port = server.add_secure_port(config.listen, credentials)
        except (RuntimeError, OSError) as exc:
            await store.close()
            if tokens is not None:
                tokens.close()
            raise OSError(f"cannot listen on {config.listen}: {exc}") from exc
        host = config.listen.rsplit(":", 1)[0]
        http = None
        if config.http_listen is not None:
            api = HttpApi(servicer, config.http_max_body_bytes, gate)
            http = HttpServer(api, config.http_listen, config.shutdown_grace_seconds)
            try:
                await http.start()
            except OSError:
                await store.close()
                raise
        await server.start()
        reaper = Reaper(store, jobs, clock, expiry_alarm)
        waker = Waker(store, jobs, clock, scheduled_alarm)
        cron = CronFirer(
            store,
            schedules,
            jobs,
            clock,
            cron_alarm,
            CronConfig(max_depth=config.max_depth),
            metrics=metrics,
        )
        pruner = Pruner(store, clock, prune_alarm)
        if dialects.is_postgresql(config.db_url):
            # Several coordinators may share the database: one runs each of these at a time.
            # The waker runs everywhere: it wakes this coordinator's own long-polls.
            for led in (reaper, cron, pruner):
                led.leadership = Leadership(store, led.name, holder, clock)
        for background in (reaper, waker, cron, pruner):
            background.start()
        pusher.start()
        endpoints = _http_servers(config, metrics, jobs, queues, schedules, clock, gate)
        for started, endpoint in enumerate(endpoints):
            try:
                await endpoint.start()
            except BaseException:
                for earlier in endpoints[:started]:
                    await earlier.stop()
                if http is not None:
                    await http.stop(0)
                await server.stop(0)
                for background in (reaper, waker, cron, pruner):
                    await background.stop()
                await pusher.stop(0)
                await store.close()
                raise
        for service_name in ("", SERVICE_NAME):
            await health.set(service_name, health_pb2.HealthCheckResponse.SERVING)
        address = f"{host}:{port}"
        store.describe_owner(f"pid {os.getpid()}, serving on {address}")
        log.info(
            "coordinator.started",
            address=address,
            http_address=http.address if http else None,
            db=_redact(config.db_url),
            auth=config.auth,
            tls="mutual" if config.tls_client_ca else bool(config.tls_cert),
            encryption_key=config.encryption.current_id if config.encryption else None,
        )
        return cls(
            config,
            address,
            jobs,
            reaper,
            waker,
            cron,
            pruner,
            pusher,
            server,
            health,
            store,
            endpoints,
            tokens,
            http_address=http.address if http else None,
            _http=http,
        )

    def http_addresses(self) -> dict[str, str]:
        """The HTTP endpoints serving (metrics, dashboard), by name, with their bound port."""
        return {endpoint.name: endpoint.address for endpoint in self._endpoints}

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: health goes NOT_SERVING, long-polls return, in-flight RPCs get `grace`
        seconds to finish, then background services and the store close. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        # Before the long-polls end: its lease loops would otherwise ask again at once.
        await self.pusher.stop()
        self.jobs.stop_waiting()
        for endpoint in self._endpoints:
            await endpoint.stop()
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        stopping = [self._server.stop(grace)]
        if self._http is not None:
            stopping.append(self._http.stop(grace))
        await asyncio.gather(*stopping)
        await self.jobs.drain()
        for service in (self.reaper, self.waker, self.cron, self.pruner):
            await service.stop()
        await self._store.close()
        if self._tokens is not None:
            self._tokens.close()
        log.info("coordinator.stopped", address=self.address)

    async def serve_until_signalled(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("coordinator.stopping", grace_seconds=self.config.shutdown_grace_seconds)
        await self.stop()


def _http_servers(
    config: ServerConfig,
    metrics: PrometheusMetrics | None,
    jobs: JobService,
    queues: QueueService,
    schedules: ScheduleService,
    clock: Clock,
    gate: Gate | None,
) -> list[EndpointServer]:
    if metrics is None:
        return []
    servers: list[EndpointServer] = []
    if config.metrics_listen is not None:
        from conveyor_server.observability.endpoint import metrics_app

        scrape: Any = metrics_app(metrics, queues)
        if gate is not None:
            # With --auth, a scrape needs a token (any role): Prometheus sends one with
            # `authorization: {credentials_file: ...}` in its scrape config.
            scrape = BearerGuard(scrape, gate)
        servers.append(EndpointServer(scrape, config.metrics_listen, "metrics"))
    if config.dashboard_listen is not None:
        from conveyor_server.dashboard.app import (
            DashboardServices,
            allowed_hosts,
            dashboard_app,
        )

        app = dashboard_app(
            DashboardServices(jobs, queues, schedules, metrics, clock),
            allowed_hosts(config.dashboard_listen),
            gate,
        )
        if gate is None and not _loopback(config.dashboard_listen):
            # No login: anyone who reaches the port can replay and cancel jobs.
            log.warning("dashboard.not_loopback", listen=config.dashboard_listen)
        servers.append(EndpointServer(app, config.dashboard_listen, "dashboard"))
    return servers


def _loopback(listen: str) -> bool:
    return listen.rsplit(":", 1)[0].strip("[]") in ("127.0.0.1", "localhost", "::1")


class _HealthReporter:
    """Turns the store's write health into the gRPC health status: NOT_SERVING while the
    store cannot write (a full disk), SERVING again once it can."""

    def __init__(self, health: HealthServicer) -> None:
        self._health = health
        self._pending: set[asyncio.Task[None]] = set()

    def store_writable(self, writable: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if writable
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        task = asyncio.create_task(self._set(status))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for service_name in ("", SERVICE_NAME):
            await self._health.set(service_name, status)


def _gate(config: ServerConfig, tokens: TokenStore | None) -> Gate | None:
    if tokens is None:
        return None
    limits = PrincipalLimits(
        PrincipalLimitsConfig(
            max_long_polls=config.max_long_polls,
            enqueue_rate=config.enqueue_rate,
            enqueue_burst=config.enqueue_burst,
        )
    )
    return Gate(PrincipalCache(tokens.find), limits)


def _interceptors(
    config: ServerConfig, gate: Gate | None
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    if gate is None:
        return []
    return [AuthInterceptor(gate, AuthSettings(close_health=config.auth_health))]


def _server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS from the configured PEM files; mutual TLS when a client CA is given."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    chain = Path(config.tls_cert).read_bytes()
    key = Path(config.tls_key).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _redact(url: str) -> str:
    """Database URLs may carry a password; logs never do."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
