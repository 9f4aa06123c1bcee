"""The error a failed run raises, with the gRPC status a service answers it with."""

from __future__ import annotations

import grpc

from hsi.errors import HsiError


class RunError(HsiError, RuntimeError):
    """A run that failed; the message names the zone, the call and the cause. The session was released.

    `code` is the status a service answers with: INVALID_ARGUMENT for an input the policy refuses,
    FAILED_PRECONDITION for an operation the policy's model does not do, CANCELLED when the caller left,
    ABORTED (the default) when a zone failed the run.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.ABORTED) -> None:
        super().__init__(message)
        self.code = code


# A failed run whose zones may have gone (and come back without its stages): the service reconnects after it.
ZONE_FAILURE = frozenset({grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE})
