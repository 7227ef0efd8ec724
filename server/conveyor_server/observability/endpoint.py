"""The /metrics endpoint as an ASGI app."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor_server.core.model import Queue
from conveyor_server.core.queues import QueueService
from conveyor_server.observability.metrics import PrometheusMetrics

# Most queues one scrape reports on (each costs the queue's stats).
MAX_SCRAPED_QUEUES = 10_000
_PAGE = 500


def metrics_app(metrics: PrometheusMetrics, queues: QueueService) -> Starlette:
    async def list_queues() -> list[Queue]:
        found: list[Queue] = []
        after: str | None = None
        while len(found) < MAX_SCRAPED_QUEUES:
            page = await queues.list(after, _PAGE)
            found.extend(page)
            if len(page) < _PAGE:
                break
            after = page[-1].config.name
        return found

    async def scrape(request: Request) -> Response:
        body = await metrics.exposition(list_queues)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", scrape)])
