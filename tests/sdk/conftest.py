"""SDK fixtures beyond the shared ones in tests/conftest.py (`live_coordinator`, `client`,
`start_worker`): the test contract protos, compiled for the session."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

_REPO = Path(__file__).resolve().parents[2]
_TEST_PROTOS = _REPO / "tests" / "contracts" / "protos"


@pytest.fixture(scope="session")
def email_pb2(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """acme/email/v1/email.proto compiled for this session (generated test code is never
    committed), imported from a temporary directory put on sys.path."""
    out = tmp_path_factory.mktemp("contracts-gen")
    # Only the test's own file is generated: its import of conveyor/v1/task.proto resolves
    # to the SDK's committed conveyor.v1.task_pb2, so both share one descriptor pool entry.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{_TEST_PROTOS}",
            f"-I{_REPO / 'protos'}",
            f"--python_out={out}",
            str(_TEST_PROTOS / "acme" / "email" / "v1" / "email.proto"),
        ],
        check=True,
    )
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("acme.email.v1.email_pb2")
    finally:
        sys.path.remove(str(out))
