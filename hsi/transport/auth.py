"""Method-level authorisation at call open: the caller's principal from its mTLS certificate against an allow
table, a bound on the calls each principal has open, and an idle timeout on calls that stop sending.

gRPC's sync server hands a call to a worker thread as soon as it opens; a unary method's thread then waits for
the request message before any handler code runs. So every method is served here as a request-streaming one:
the wrapper runs at call open, refuses an unlisted or over-limit principal before reading anything, and reads
the request (or each message of a stream) under the idle watchdog. A refused call costs only its refusal.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from hsi.principal import Principal
from hsi.transport.activity import PROCESS_ACTIVITY, Activity

log = logging.getLogger("hsi.auth")

# Methods any authenticated peer may call: health probes and reflection. Health's Watch is not served: each
# watch would hold a thread for as long as its caller keeps it open.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
PUBLIC_METHODS = (
    HEALTH_CHECK,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
)
ANY = "*"
_PRINCIPAL_MAX = 256  # a longer certificate name is not echoed back


@dataclass(frozen=True)
class Limits:
    """What one server admits."""

    calls_per_principal: int = 16  # calls a principal may have open at once; more get RESOURCE_EXHAUSTED
    idle_s: float = 20.0  # a call waiting longer than this for its next request message is cancelled


def peer_principal(context: grpc.ServicerContext) -> str | None:
    """The principal (certificate common name) of the caller, None if it presented no certificate."""
    names = context.auth_context().get("x509_common_name")
    return names[0].decode(errors="replace") if names else None


class IdleWatchdog:
    """Cancels calls that wait longer than `idle_s` for their next request message (one thread per server)."""

    def __init__(self, idle_s: float, tick_s: float = 0.25) -> None:
        self.idle_s = idle_s
        self._waiting: dict[int, tuple[float, grpc.ServicerContext]] = {}
        self._lock = threading.Lock()
        self._tick = tick_s
        threading.Thread(target=self._watch, name="hsi-idle-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Count the block as waiting for a message of `context`'s call."""
        key = id(context)
        with self._lock:
            self._waiting[key] = (time.monotonic() + self.idle_s, context)
        try:
            yield
        finally:
            with self._lock:
                self._waiting.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                late = [(k, ctx) for k, (due, ctx) in self._waiting.items() if due < now]
                for k, _ in late:
                    del self._waiting[k]
            for _, ctx in late:
                ctx.cancel()  # the waiting read fails and the handler thread is freed

    def messages(self, it: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        """The request messages of a call, each awaited under the idle timeout."""
        while True:
            with self.waiting(context):
                try:
                    message = next(it)
                except StopIteration:
                    return
            yield message


class AllowListInterceptor(grpc.ServerInterceptor):  # type: ignore[misc,unused-ignore]  # grpc ships no stubs
    """Deny by default: a method runs only for the principals its row names (`party/*`: any of the party's).

    Every call to a method of the table also counts as `activity` while it runs, so work precomputed in the
    background (zones.common.precompute) waits for the gaps between calls; health probes do not count.
    """

    def __init__(self, allow: Mapping[str, frozenset[str]], activity: Activity = PROCESS_ACTIVITY,
                 limits: Limits = Limits(), health_pool: ThreadPoolExecutor | None = None) -> None:
        self._allow = {m: frozenset(p) for m, p in allow.items()}
        self._counted = frozenset(self._allow)
        self._activity = activity
        for m in PUBLIC_METHODS:
            self._allow.setdefault(m, frozenset({ANY}))
        self.limits = limits
        self.watchdog = IdleWatchdog(limits.idle_s)
        self._public_pool = health_pool
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def _check(self, method: str, context: grpc.ServicerContext) -> str:
        """The caller's principal, if it may call `method`; the call is aborted otherwise."""
        name = peer_principal(context)
        if name is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        allowed = self._allow.get(method)
        if allowed is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"method {method} is not served to any principal")
        assert name is not None and allowed is not None
        shown = name if len(name) <= _PRINCIPAL_MAX else name[:_PRINCIPAL_MAX] + "..."
        if ANY in allowed:
            return name
        principal = Principal.parse_or_none(name)
        if principal is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"certificate name {shown!r} is not a <party>/<zone> principal")
        assert principal is not None
        if name not in allowed and f"{principal.party}/*" not in allowed:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"principal {shown!r} may not call {method}")
        return name

    @contextlib.contextmanager
    def _admitted(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Check the caller and hold one of its call slots for the block."""
        principal = self._check(method, context)
        with self._lock:
            n = self._open.get(principal, 0)
            if n >= self.limits.calls_per_principal:
                refused = True
            else:
                refused = False
                self._open[principal] = n + 1
        if refused:
            log.warning("refused %s: %s has %d calls open", method, principal, n)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"principal {principal!r} has {n} calls open; at most {self.limits.calls_per_principal}")
        try:
            with self._activity.serving() if method in self._counted else contextlib.nullcontext():
                yield
        finally:
            with self._lock:
                left = self._open[principal] - 1
                if left:
                    self._open[principal] = left
                else:
                    del self._open[principal]

    def _single(self, requests: Iterator[Any], context: grpc.ServicerContext, method: str) -> Any:
        """The one request message of a unary-request call, awaited under the idle timeout."""
        with self.watchdog.waiting(context):
            try:
                return next(requests)
            except StopIteration:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{method} requires exactly one request message")

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method: str = details.method
        admitted, single, watchdog = self._admitted, self._single, self.watchdog
        de, ser = handler.request_deserializer, handler.response_serializer
        if handler.unary_unary:
            unary_unary = handler.unary_unary

            def uu(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                with admitted(method, context):
                    return unary_unary(single(requests, context, method), context)
            out = grpc.stream_unary_rpc_method_handler(uu, de, ser)
            behaviour: Any = uu
        elif handler.unary_stream:
            unary_stream = handler.unary_stream

            def us(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                with admitted(method, context):
                    yield from unary_stream(single(requests, context, method), context)
            out = grpc.stream_stream_rpc_method_handler(us, de, ser)
            behaviour = us
        elif handler.stream_unary:
            stream_unary = handler.stream_unary

            def su(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                with admitted(method, context):
                    return stream_unary(watchdog.messages(requests, context), context)
            out = grpc.stream_unary_rpc_method_handler(su, de, ser)
            behaviour = su
        else:
            stream_stream = handler.stream_stream

            def ss(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                with admitted(method, context):
                    yield from stream_stream(watchdog.messages(requests, context), context)
            out = grpc.stream_stream_rpc_method_handler(ss, de, ser)
            behaviour = ss
        if method == HEALTH_CHECK and self._public_pool is not None:
            # grpc runs the call on this pool: a server whose workers are all busy still answers health checks
            behaviour.experimental_thread_pool = self._public_pool
        return out
