"""Helpers for tests/auth: raw calls of any CoordinatorService method with chosen metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from google.protobuf import symbol_database

SERVICE = pb.DESCRIPTOR.services_by_name["CoordinatorService"]
METHODS = [m.name for m in SERVICE.methods]
CALL_TIMEOUT = 10.0
MakeToken = Callable[..., str]


def request_class(method: str) -> Any:
    input_type = SERVICE.methods_by_name[method].input_type
    return symbol_database.Default().GetSymbol(input_type.full_name)


def output_class(method: str) -> Any:
    return symbol_database.Default().GetSymbol(
        SERVICE.methods_by_name[method].output_type.full_name
    )


async def call(
    channel: grpc.aio.Channel,
    method: str,
    request: Any = None,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
    timeout: float = CALL_TIMEOUT,
) -> grpc.StatusCode:
    """Calls `method` (an empty request by default) and returns the status code."""
    stub = channel.unary_unary(
        f"/{SERVICE.full_name}/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=output_class(method).FromString,
    )
    try:
        await stub(
            request if request is not None else request_class(method)(),
            metadata=metadata,
            timeout=timeout,
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]
