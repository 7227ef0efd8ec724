"""Running the real `conveyor` executable from a test.

The coordinator under test runs on the test's event loop, so the executable is started with
asyncio.create_subprocess_exec: a blocking subprocess.run would stop the loop that has to
answer the command's calls."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# The venv's own console script; `python -m conveyor_server` is the same entry point.
_EXECUTABLE = shutil.which("conveyor", path=str(Path(sys.executable).parent))
COMMAND = [_EXECUTABLE] if _EXECUTABLE else [sys.executable, "-m", "conveyor_server"]
# Generous: a command normally answers in well under a second.
RUN_TIMEOUT = 20.0


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without a CONVEYOR_ADDRESS of its own."""
    env = {k: v for k, v in os.environ.items() if k != "CONVEYOR_ADDRESS"}
    env.update(extra)
    return env


async def start_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env if env is not None else cli_env(),
    )


async def finish(process: asyncio.subprocess.Process, stdin: bytes | None = None) -> Result:
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), RUN_TIMEOUT)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def run_cli(
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    return await finish(await start_cli(*args, cwd=cwd, env=env), stdin)


class Conveyor(Protocol):
    """The `conveyor` fixture: runs a command against the test's coordinator."""

    async def __call__(self, *args: str, stdin: bytes | None = None) -> Result: ...
