"""`conveyor serve --metrics-listen ... --dashboard-listen ...` as users run it: both answer
over HTTP, and SIGTERM still stops the coordinator (the HTTP server leaves signals alone)."""

from __future__ import annotations

import signal

import httpx
from conftest import StartServer, free_port


async def test_serve_answers_metrics_and_dashboard_and_stops_on_sigterm(
    start_server: StartServer,
) -> None:
    metrics, dashboard = free_port(), free_port()
    server = await start_server(
        "--metrics-listen", f"127.0.0.1:{metrics}", "--dashboard-listen", f"127.0.0.1:{dashboard}"
    )
    async with httpx.AsyncClient() as http:
        scraped = await http.get(f"http://127.0.0.1:{metrics}/metrics")
        page = await http.get(f"http://127.0.0.1:{dashboard}/queues")
    assert scraped.status_code == 200 and "conveyor_jobs_enqueued_total" in scraped.text
    assert page.status_code == 200 and "Queues" in page.text
    server.signal(signal.SIGTERM)
    assert await server.exit_code() == 0
