"""The README's producer and worker, run as a new user would run them."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_file(name: str) -> str:
    """The README's python block that starts with `# {name}`."""
    for block in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"README.md has no python block starting with '# {name}'")


async def test_readme_worker_and_producer_process_a_job(start_server: Any, tmp_path: Path) -> None:
    server = await start_server()
    for name in ("tasks.py", "producer.py"):
        (tmp_path / name).write_text(readme_file(name).replace("127.0.0.1:7345", server.address))
    conveyor = shutil.which("conveyor", path=os.path.dirname(sys.executable))
    assert conveyor is not None, "the conveyor command is installed beside this Python"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = await asyncio.create_subprocess_exec(
        conveyor, "worker", "tasks:worker", cwd=tmp_path, env=env
    )
    try:
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "producer.py", cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(producer.communicate(), timeout=60)
        assert producer.returncode == 0
        assert out.decode().strip() == "b'sent to ada@example.com'"
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), timeout=30)
    assert code == 0
