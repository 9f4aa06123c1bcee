"""How a zone's errors reach the wire: refusals as they are, anything unexpected as an id with the details logged."""

from __future__ import annotations

import logging
import re
from typing import NoReturn

import grpc
import pytest

from hsi.transport.status import ZoneError
from zones.common.status import status_errors


class Aborted(Exception):
    """What the fake context raises in place of grpc's bare Exception."""


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.code, self.details = code, details
        raise Aborted()


def _answer(e: Exception) -> Context:
    ctx = Context()
    with pytest.raises(Aborted):
        with status_errors(ctx):
            raise e
    return ctx


def test_a_refusal_keeps_its_code_and_message() -> None:
    ctx = _answer(ZoneError(grpc.StatusCode.NOT_FOUND, "no tensor 'x'"))
    assert (ctx.code, ctx.details) == (grpc.StatusCode.NOT_FOUND, "no tensor 'x'")


def test_an_unexpected_error_is_logged_and_answered_with_an_id_only(caplog: pytest.LogCaptureFixture) -> None:
    leak = "/opt/openfhe-development/src/pke/lib/ciphertext.cpp:42: cereal could not read"
    with caplog.at_level(logging.ERROR, logger="hsi.zone"):
        ctx = _answer(RuntimeError(leak))
    assert ctx.code == grpc.StatusCode.INTERNAL
    m = re.fullmatch(r"internal error ([0-9a-f]{12})", ctx.details)
    assert m, ctx.details
    logged = [r for r in caplog.records if m.group(1) in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None and leak in caplog.text


def test_grpc_abort_passes_through() -> None:
    ctx = Context()
    with pytest.raises(Exception) as e:
        with status_errors(ctx):
            raise Exception()  # what grpc's context.abort raises once it has set the status
    assert type(e.value) is Exception and ctx.code is None
    with pytest.raises(Aborted):  # a bare Exception with a message is no abort: it must not reach the wire
        with status_errors(ctx):
            raise Exception("/home/build/secret.cpp")
    assert ctx.code == grpc.StatusCode.INTERNAL and "secret" not in ctx.details
