"""The dashboard in a real browser: Debian's chromium driven by Playwright (never
`playwright install`). Skipped only where chromium is not installed; CI installs it."""

from __future__ import annotations

import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc
from conveyor_server.main import Coordinator

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")

QUEUE = "emails"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# How long the page may take to show what the test waits for (the graphs refresh every 3 s).
WAIT_MS = 20_000

if CHROMIUM is not None:
    from playwright.async_api import Browser, Page, async_playwright


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, coordinator: Coordinator) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=f"http://{coordinator.http_addresses()['dashboard']}",
        viewport={"width": 1280, "height": 900},
    )
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield opened
    finally:
        await context.close()
    # A CSP violation (an inline script or style) shows up as a console error.
    assert not errors, errors


def assert_not_blank(png: bytes) -> None:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 8, f"the screenshot has only {len(colours)} colours"


async def shoot(page: Page, directory: Path, name: str) -> None:
    png = await page.screenshot(path=str(directory / f"{name}.png"), full_page=True)
    assert_not_blank(png)


async def enqueue(stub: rpc.CoordinatorServiceStub, **spec: object) -> str:
    job = pb.JobSpec(queue=QUEUE, task_type="send", payload=b'{"to": "a@example.com"}', **spec)  # type: ignore[arg-type]
    reply = await stub.Enqueue(pb.EnqueueRequest(job=job))
    return reply.job_id


async def run_one(stub: rpc.CoordinatorServiceStub, outcome: int = pb.OUTCOME_SUCCESS) -> str:
    reply = await stub.Lease(pb.LeaseRequest(worker_id="browser-test", queues=[QUEUE], max_jobs=1))
    [job] = reply.jobs
    await stub.Receipt(
        pb.ReceiptRequest(
            job_id=job.job_id,
            lease_token=job.lease_token,
            outcome=outcome,  # type: ignore[arg-type]
            error=pb.JobError(message="mailbox full") if outcome == pb.OUTCOME_FAILURE else None,
        )
    )
    return job.job_id


async def test_every_page_loads_and_shows_its_data(
    stub: rpc.CoordinatorServiceStub, page: Page, tmp_path: Path
) -> None:
    job_id = await enqueue(stub)
    await stub.CreateSchedule(
        pb.CreateScheduleRequest(
            schedule=pb.Schedule(
                name="nightly",
                cron="0 3 * * *",
                timezone="UTC",
                job=pb.JobSpec(queue=QUEUE, task_type="send"),
            )
        )
    )
    await page.goto("/queues")
    await page.locator(f'tr[data-queue="{QUEUE}"]').wait_for()
    await shoot(page, tmp_path, "queues")
    await page.goto(f"/jobs?queue={QUEUE}")
    await page.get_by_role("link", name=job_id).click()
    await page.get_by_text("Show payload").click()
    await page.locator("pre.payload", has_text="a@example.com").wait_for()
    await shoot(page, tmp_path, "job")
    await page.goto("/schedules")
    await page.locator('tr[data-schedule="nightly"]').wait_for()
    await shoot(page, tmp_path, "schedules")
    await page.goto("/dead")
    await shoot(page, tmp_path, "dead")


async def test_a_queue_is_paused_and_resumed_from_the_queues_page(
    stub: rpc.CoordinatorServiceStub, page: Page
) -> None:
    await enqueue(stub)
    await page.goto("/queues")
    row = page.locator(f'tr[data-queue="{QUEUE}"]')
    await row.get_by_role("button", name="Pause").click()
    await row.get_by_role("button", name="Resume").wait_for()
    assert (await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))).paused
    await row.get_by_role("button", name="Resume").click()
    await row.get_by_role("button", name="Pause").wait_for()
    assert not (await stub.GetQueue(pb.GetQueueRequest(name=QUEUE))).paused


async def test_a_dead_job_is_replayed_from_the_dead_letter_view(
    stub: rpc.CoordinatorServiceStub, page: Page, tmp_path: Path
) -> None:
    await enqueue(stub, max_attempts=1)
    dead_id = await run_one(stub, pb.OUTCOME_FAILURE)
    await page.goto("/dead")
    await page.get_by_text("mailbox full").wait_for()
    await shoot(page, tmp_path, "dead")
    await page.get_by_role("button", name="Replay selected").click()
    await page.get_by_text("Replayed 1 job").wait_for()
    job = await stub.GetJob(pb.GetJobRequest(job_id=dead_id))
    assert job.state == pb.JOB_STATE_AVAILABLE


async def test_a_job_is_found_by_its_key_and_its_children_are_followed(
    stub: rpc.CoordinatorServiceStub, page: Page, tmp_path: Path
) -> None:
    parent = await enqueue(stub, idempotency_key="order-42")
    child = await enqueue(stub, parent_job_id=parent)
    await enqueue(stub)  # another job, which the search must not show
    await page.goto("/jobs")
    await page.get_by_label("Idempotency key").fill("order-42")
    await page.get_by_role("button", name="Filter").click()
    await page.get_by_role("link", name=parent).click()
    await page.get_by_role("heading", name="Children").wait_for()
    await shoot(page, tmp_path, "children")
    await page.get_by_role("link", name=child).click()
    await page.get_by_role("link", name=parent).wait_for()  # the child's parent link


async def test_the_flow_graph_gains_points_while_jobs_run(
    stub: rpc.CoordinatorServiceStub, page: Page, tmp_path: Path
) -> None:
    await enqueue(stub)
    await page.goto(f"/queues/{QUEUE}?period=15m")
    flow = page.locator("#graphs svg.chart-flow")
    before = int(await flow.get_attribute("data-points") or "0")
    for _ in range(5):
        await enqueue(stub)
    for _ in range(4):
        await run_one(stub)
    await enqueue(stub, max_attempts=1)
    await run_one(stub, pb.OUTCOME_FAILURE)
    # The page's script re-fetches the graphs; no reload here.
    await page.wait_for_function(
        "n => Number(document.querySelector('#graphs svg.chart-flow').dataset.points) > n",
        arg=before,
        timeout=WAIT_MS,
    )
    run_bars = await page.locator("#graphs svg.chart-run").get_attribute("data-points")
    assert int(run_bars or "0") >= 1
    await shoot(page, tmp_path, "queue-graphs")
