"""Fixtures of the wire-contract specs: `wire` drives the real coordinator of tests/conftest.py
with raw conveyor.v1 messages."""

from __future__ import annotations

import pytest
from conveyor.v1 import coordinator_pb2_grpc as rpc
from server_wire import Wire


@pytest.fixture
def wire(stub: rpc.CoordinatorServiceStub) -> Wire:
    return Wire(stub)
