"""Credentials for the coordinator: a bearer token on every call and TLS for the channel."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

TOKEN_ENV = "CONVEYOR_TOKEN"  # nosec B105 # the name of a variable, not a secret


def resolve_token(token: str | None) -> str | None:
    """The `token=` argument, else $CONVEYOR_TOKEN, else None (no token sent)."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None and (not token.isprintable() or " " in token):
        raise ValueError("the token has spaces or unprintable characters; check $CONVEYOR_TOKEN")
    return token


def channel_credentials(
    credentials: grpc.ChannelCredentials | None, tls_root_certificates: bytes | None
) -> grpc.ChannelCredentials | None:
    """`credentials` as given, or TLS trusting `tls_root_certificates` (PEM bytes)."""
    if credentials is not None and tls_root_certificates is not None:
        raise ValueError("pass credentials or tls_root_certificates, not both")
    if tls_root_certificates is not None:
        return grpc.ssl_channel_credentials(root_certificates=tls_root_certificates)
    return credentials


if TYPE_CHECKING:
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:  # not subscriptable at run time
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor


class BearerToken(_Interceptor):
    """Adds `authorization: Bearer <token>` to every call (on TLS and plaintext channels alike:
    gRPC's call credentials refuse plaintext channels, where a local coordinator may be)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
        metadata.add(*self._header)
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)
