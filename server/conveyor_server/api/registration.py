"""Registers the CoordinatorService so that request bytes that do not decode are
INVALID_ARGUMENT naming the expected message.

grpc-python decodes a request before the handler runs; a deserializer that raises becomes
UNKNOWN with a Python class name in the message. Here each deserializer returns a marker
instead, and the handler refuses the marker before the servicer sees it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from conveyor.v1 import coordinator_pb2 as pb
from conveyor.v1 import coordinator_pb2_grpc as rpc

SERVICE = pb.DESCRIPTOR.services_by_name["CoordinatorService"]


class _Undecodable:
    """Stands in for a request whose bytes are not a valid message."""


_UNDECODABLE = _Undecodable()


def add_coordinator_servicer(servicer: rpc.CoordinatorServiceServicer, server: Any) -> None:
    """Like rpc.add_CoordinatorServiceServicer_to_server, with undecodable requests refused."""
    generated = _Capture()
    rpc.add_CoordinatorServiceServicer_to_server(servicer, generated)  # type: ignore[arg-type]
    if set(generated.handlers) != set(SERVICE.methods_by_name):
        # The generated code registers through add_registered_method_handlers (grpcio-tools
        # 1.62 and later); anything else would silently drop RPCs here.
        raise RuntimeError("generated CoordinatorService registration changed shape")
    handlers = {
        method: _checked(handler, SERVICE.methods_by_name[method].input_type.full_name)
        for method, handler in generated.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


class _Capture:
    """Receives the generated code's method handlers instead of a server."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        pass  # rebuilt from the registered handlers below

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers.update(handlers)


def _checked(
    handler: grpc.RpcMethodHandler[Any, Any], message_type: str
) -> grpc.RpcMethodHandler[Any, Any]:
    decode: Callable[[bytes], Any] = handler.request_deserializer  # type: ignore[assignment]
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]] = (
        handler.unary_unary  # type: ignore[assignment]
    )

    def deserializer(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:  # DecodeError, and whatever else a parser may raise on bad bytes
            return _UNDECODABLE

    async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request is _UNDECODABLE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {message_type} message: its bytes do not decode",
            )
        return await behavior(request, context)

    return handler._replace(  # type: ignore[attr-defined,no-any-return]
        request_deserializer=deserializer, unary_unary=unary_unary
    )
