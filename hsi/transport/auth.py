"""Method-level authorisation: the caller's principal from its mTLS certificate, checked against an allow table."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from hsi.transport.activity import PROCESS_ACTIVITY, Activity

# Methods any authenticated peer may call (health probes, reflection).
PUBLIC_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)
ANY = "*"


def peer_principal(context: grpc.ServicerContext) -> str | None:
    """The principal (certificate common name) of the caller, None if it presented no certificate."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None


class AllowListInterceptor(grpc.ServerInterceptor):  # type: ignore[misc,unused-ignore]  # grpc ships no stubs
    """Deny by default: a method runs only for the principals its row names (`party/*`: any of the party's).

    Every call to a method of the table also counts as `activity` while it runs, so work precomputed in the
    background (zones.common.precompute) waits for the gaps between calls; health probes do not count.
    """

    def __init__(self, allow: Mapping[str, frozenset[str]], activity: Activity = PROCESS_ACTIVITY) -> None:
        self._allow = {m: frozenset(p) for m, p in allow.items()}
        self._counted = frozenset(self._allow)
        self._activity = activity
        for m in PUBLIC_METHODS:
            self._allow.setdefault(m, frozenset({ANY}))

    def _check(self, method: str, context: grpc.ServicerContext) -> None:
        principal = peer_principal(context)
        if principal is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        allowed = self._allow.get(method)
        if allowed is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"method {method} is not served to any principal")
        party = (principal or "").partition("/")[0]
        if ANY not in allowed and principal not in allowed and f"{party}/*" not in allowed:  # type: ignore[operator]
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"principal {principal!r} may not call {method}")

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        check = self._check
        serving = self._activity.serving if method in self._counted else contextlib.nullcontext

        def wrap(behaviour: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
            if streaming_response:
                def stream(request: Any, context: grpc.ServicerContext) -> Any:
                    check(method, context)
                    with serving():
                        yield from behaviour(request, context)
                return stream

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                check(method, context)
                with serving():
                    return behaviour(request, context)
            return unary

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False),
                                                       handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True),
                                                        handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, False),
                                                        handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True),
                                                     handler.request_deserializer, handler.response_serializer)
