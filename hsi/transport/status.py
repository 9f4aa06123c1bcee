"""Errors that carry the gRPC status a server answers them with."""

from __future__ import annotations

import grpc

from hsi.errors import HsiError


class StatusError(HsiError):
    """A refusal with its gRPC status code; servers abort the call with exactly this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ZoneError(StatusError):
    """A request a zone (or the runtime on its behalf) refuses, with the gRPC status it answers with."""
