"""The Go conformance worker (examples/go-worker) passes `conveyor conformance`, run for real:
built from Debian's Go packages in GOPATH mode by examples/go-worker/build.sh, then run by the
kit against a coordinator of its own. Skipped only where the Go toolchain is absent; CI
installs it (.ci/run), so there it runs."""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conveyor.cli import _CONFORMANCE_SCENARIOS

if shutil.which("go") is None:
    pytest.skip(
        "go is not on PATH: install Debian's golang-go (see examples/go-worker/build.sh)",
        allow_module_level=True,
    )

BUILD_SCRIPT = Path(__file__).parent.parent.parent / "examples" / "go-worker" / "build.sh"
_EXECUTABLE = shutil.which("conveyor", path=str(Path(sys.executable).parent))
COMMAND = [_EXECUTABLE] if _EXECUTABLE else [sys.executable, "-m", "conveyor_server"]
# A first build compiles grpc from source (about 20 s here); later ones hit Go's build cache.
BUILD_TIMEOUT = 600
KIT_TIMEOUT = 120


@pytest.fixture(scope="module")
def go_worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("go-worker")
    build = subprocess.run(
        [str(BUILD_SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return out / "conveyor-go-worker"


async def test_the_go_worker_passes_every_scenario_of_the_kit(go_worker: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "conformance",
        "--worker-cmd",
        shlex.quote(str(go_worker)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), KIT_TIMEOUT)
    output = stdout.decode()
    verdicts = {
        line.split()[0]: line.split()[1]
        for line in output.splitlines()
        if line.split()[:1] and line.split()[0] in _CONFORMANCE_SCENARIOS
    }
    assert process.returncode == 0, output
    assert verdicts == dict.fromkeys(_CONFORMANCE_SCENARIOS, "pass"), output
