"""The pusher's HTTP client, by measurement (issue 12): httpx against aiohttp, each POSTing the
same pushes to a local no-op function server in another process.

    python bench/push_client.py                       # 3 runs of each, alternating
    python bench/push_client.py --runs 5 --requests 5000 --concurrency 10

Each run sends --requests POSTs (a 100-byte body and the headers a push carries) with
--concurrency in flight, over one client with keep-alive, reading each reply body as the
pusher does (streamed, bounded). Reported: requests per second, and the time of one request
(p50, p99), the median over runs. aiohttp is not a dependency: `pip install aiohttp` first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from push_bench import NoopFunction

BODY = b"x" * 100
HEADERS = {
    "Content-Type": "application/octet-stream",
    "Conveyor-Job-Id": "0190c2e4-7b4f-7cc2-9a57-3c1d2b8d9e01",
    "Conveyor-Attempt": "1",
    "Conveyor-Lease-Token": "f" * 32,
    "Conveyor-Deadline": "2026-12-01T18:00:00.000Z",
    "Conveyor-Task-Type": "hello",
    "Conveyor-Queue": "fn",
    "Conveyor-Max-Attempts": "3",
    "Conveyor-Signature": "t=1800000000,v1=" + "0" * 64,
}
LIMIT = 1024 * 1024

Post = Callable[[], Awaitable[None]]


async def serve() -> None:
    """The function server (its own process): prints its URL, serves until killed."""
    function = NoopFunction()
    server = await function.start()
    print(function.url, flush=True)
    async with server:
        await server.serve_forever()


async def drive(post: Post, requests: int, concurrency: int) -> dict[str, float]:
    times: list[float] = []
    left = requests

    async def one_lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await post()
            times.append(time.perf_counter() - started)

    await post()  # a first connection, outside the timing
    started = time.perf_counter()
    await asyncio.gather(*(one_lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    times.sort()
    return {
        "per_s": requests / elapsed,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int(len(times) * 0.99)] * 1000,
    }


async def with_httpx(url: str, requests: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:

        async def post() -> None:
            async with client.stream(
                "POST", url, content=BODY, headers=HEADERS, timeout=30
            ) as reply:
                body = bytearray()
                async for chunk in reply.aiter_bytes():
                    body += chunk
                    if len(body) > LIMIT:
                        break
                assert reply.status_code == 200

        return await drive(post, requests, concurrency)


async def with_aiohttp(url: str, requests: int, concurrency: int) -> dict[str, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post() -> None:
            async with session.post(url, data=BODY, headers=HEADERS, allow_redirects=False) as r:
                body = bytearray()
                async for chunk in r.content.iter_any():
                    body += chunk
                    if len(body) > LIMIT:
                        break
                assert r.status == 200

        return await drive(post, requests, concurrency)


CLIENTS = {"httpx": with_httpx, "aiohttp": with_aiohttp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        results: dict[str, list[dict[str, float]]] = {name: [] for name in CLIENTS}
        for _ in range(args.runs):
            for name, client in CLIENTS.items():  # alternating: drift hits both alike
                results[name].append(asyncio.run(client(url, args.requests, args.concurrency)))
    finally:
        server.terminate()
        server.wait()
    print(f"{args.requests} POSTs, {args.concurrency} in flight, median of {args.runs} runs")
    for name, runs in results.items():
        medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(
            f"  {name:8} {medians['per_s']:8.0f} req/s   p50 {medians['p50_ms']:6.2f} ms"
            f"   p99 {medians['p99_ms']:6.2f} ms"
        )


if __name__ == "__main__":
    main()
