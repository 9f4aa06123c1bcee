"""How a zone's refusals reach the wire: a StatusError with its own code, a peer's failure mapped, others INTERNAL."""

from __future__ import annotations

import logging
import uuid
from types import TracebackType
from typing import Literal

import grpc

from hsi.transport.status import StatusError

log = logging.getLogger("hsi.zone")


def peer_status(e: grpc.RpcError) -> grpc.StatusCode:
    """The status a zone answers with when a peer it pushes to fails: the peer's refusal as it is, a peer that
    is down or too slow as UNAVAILABLE."""
    code: grpc.StatusCode = e.code()
    return grpc.StatusCode.UNAVAILABLE if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN) else code


class status_errors:  # noqa: N801 - used as a context manager, named like one
    """Abort the call with a StatusError's code and message. An unexpected error is logged here, with its
    traceback and a fresh id, and answered INTERNAL "internal error <id>": no exception text, path or traceback
    reaches the wire (OpenFHE's messages carry its build paths)."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self.context = context

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> Literal[False]:
        if e is None:
            return False
        if isinstance(e, StatusError):
            self.context.abort(e.code, str(e))
        if isinstance(e, Exception) and not _is_abort(e):
            eid = uuid.uuid4().hex[:12]
            log.error("internal error %s", eid, exc_info=(type(e), e, tb))
            self.context.abort(grpc.StatusCode.INTERNAL, f"internal error {eid}")
        return False


def _is_abort(e: BaseException) -> bool:
    # grpc's context.abort raises a bare Exception(), with no arguments, after setting the status.
    return type(e) is Exception and not e.args
