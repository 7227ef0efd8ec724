"""The OpenAPI document of the HTTP API: served, built from the routing table, and fuzzed
with schemathesis against a real coordinator: no 5xx, and every reply conforms to it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
from conveyor_server.api.http.routes import ROUTES
from conveyor_server.main import Coordinator

# Fuzzing budget: the run stops after this many seconds whatever is left (CI bound ~60 s).
FUZZ_SECONDS = 45
EXAMPLES_PER_OPERATION = 20
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


async def test_openapi_document_has_an_operation_per_route(http: httpx.AsyncClient) -> None:
    document = (await http.get("/v1/openapi.json")).json()

    operations = {
        operation["operationId"]
        for path in document["paths"].values()
        for operation in path.values()
    }
    assert document["openapi"].startswith("3.")
    assert operations == {route.rpc for route in ROUTES}


async def test_openapi_document_names_path_fields_by_their_last_part(
    http: httpx.AsyncClient,
) -> None:
    document = (await http.get("/v1/openapi.json")).json()

    patch = document["paths"]["/v1/queues/{name}"]["patch"]
    assert [p["name"] for p in patch["parameters"]] == ["name", "update_mask"]


async def test_schemathesis_finds_no_server_error_and_no_nonconforming_reply(
    http_coordinator: Coordinator, tmp_path: Path
) -> None:
    # Lease and WaitJob long-poll by design (up to 30 s and 300 s): the fuzzer would wait them
    # out on the jobs its examples create. test_http_workers and test_http_jobs cover them.
    st = Path(sys.executable).parent / "st"
    process = await asyncio.create_subprocess_exec(
        str(st),
        "run",
        f"http://{http_coordinator.http_address}/v1/openapi.json",
        f"--checks={CHECKS}",
        "--exclude-operation-id=Lease",
        "--exclude-operation-id=WaitJob",
        "--phases=examples,coverage,fuzzing",
        f"--max-examples={EXAMPLES_PER_OPERATION}",
        f"--max-time={FUZZ_SECONDS}",
        "--request-timeout=20",
        "--seed=1",
        "--workers=1",
        "--no-color",
        # No example database or crash cache in the work tree: every run starts the same.
        "--generation-database=none",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=FUZZ_SECONDS + 60)
    report = output.decode(errors="replace")

    assert process.returncode == 0, report[-6000:]
    assert " generated, " in report and "passed" in report
