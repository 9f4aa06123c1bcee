"""An error that carries the gRPC status a server answers it with."""

from __future__ import annotations

import grpc


class StatusError(Exception):
    """A refusal with its gRPC status code; servers abort the call with exactly this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
