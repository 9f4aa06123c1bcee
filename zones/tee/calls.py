"""How every key service call is admitted, recorded in the audit log and refused: the servicer's common gate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

import grpc

from hsi.audit import bounded
from hsi.transport.auth import peer_principal
from hsi.transport.status import StatusError
from zones.tee.access import Denied
from zones.tee.audit import AuditError
from zones.tee.enclave import Enclave
from zones.tee.hsm import SealError
from zones.tee.keystore import KeyStoreError
from zones.tee.pieces import PiecesFull

T = TypeVar("T")
log = logging.getLogger("zones.tee.service")

MAX_STATUS_CHARS = 512  # a status message never echoes more (a huge field would not fit gRPC's trailers)


def _status(message: str) -> str:
    """A status message as sent: bounded, ASCII (non-ASCII escaped)."""
    return bounded(message, MAX_STATUS_CHARS).encode("ascii", "backslashreplace").decode()[: 2 * MAX_STATUS_CHARS]


def _audit_failed(context: grpc.ServicerContext, e: AuditError) -> NoReturn:
    """Fail closed: no call proceeds, or is refused, without its record."""
    log.error("%s", e)
    context.abort(grpc.StatusCode.INTERNAL, "the key service's audit log cannot be appended; it refuses every call "
                                            "until an operator repairs it (see the enclave's log)")
    raise AssertionError("unreachable")


@dataclass
class Call:
    """Who calls what, as the audit log records it."""

    principal: str
    operation: str
    key: str = ""
    session: str = ""


class CallGate:
    """Admit, record and refuse calls: grant held -> request fields within bounds -> grant decided (recipient,
    limits) and recorded -> work; a refusal at any step is recorded and returned with a bounded message."""

    enclave: Enclave

    def _call(self, context: grpc.ServicerContext, operation: str, key: str = "", session: str = "") -> Call:
        return Call(peer_principal(context) or "", operation, key, session)

    def _refusal(self, e: Exception, call: Call) -> tuple[grpc.StatusCode, str]:
        """The status and reason an exception of a call's admission or work refuses it with."""
        if isinstance(e, Denied):
            return e.code, e.reason
        if isinstance(e, StatusError):  # a broken stream, a refused push
            return e.code, str(e)
        if isinstance(e, KeyStoreError):
            code = grpc.StatusCode.ALREADY_EXISTS if "already exists" in str(e) else grpc.StatusCode.NOT_FOUND
            return code, str(e)
        if isinstance(e, SealError):
            return grpc.StatusCode.DATA_LOSS, (
                f"sealed key {call.key!r} does not open: {e}. Keys are sealed to one enclave build: after the "
                f"enclave code changed, its keys under {self.enclave.zone.key_dir} do not open (there is no "
                "migration); a dev deployment re-creates them (hsi down, remove that directory, hsi up)")
        if isinstance(e, PiecesFull):
            return grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)
        if isinstance(e, KeyError):
            return grpc.StatusCode.INVALID_ARGUMENT, f"missing header field {e}"
        if isinstance(e, ValueError):  # Invalid, ConversionError, HeParamsError, a recipient outside the policy
            return grpc.StatusCode.INVALID_ARGUMENT, str(e)
        log.error("key service call %s of %s failed", call.operation, call.principal, exc_info=e)
        return grpc.StatusCode.INTERNAL, f"the enclave failed ({type(e).__name__}; details in its log)"

    def _refuse(self, context: grpc.ServicerContext, call: Call, code: grpc.StatusCode, reason: str) -> NoReturn:
        """Record the refusal and end the call with it."""
        try:
            self.enclave.access.deny(call.principal, call.operation, call.key, call.session, reason, code)
        except AuditError as e:
            _audit_failed(context, e)
        context.abort(code, _status(reason))
        raise AssertionError("unreachable")

    def _run(self, context: grpc.ServicerContext, call: Call, body: Callable[[str], T],
             admit: Callable[[], str] | None = None, known_key: bool = False) -> T:
        """Admit `call` (grant held, `admit`'s bounds, which give the recipient; the key exists when `known_key`;
        the grant's recipient and limits), record it, and run `body(recipient)`; any refusal recorded."""
        access = self.enclave.access
        try:
            access.check_grant(call.principal, call.operation, call.key)
            recipient = admit() if admit else ""
            if known_key:
                self.enclave.keys.meta(call.key)
            access.decide(call.principal, call.operation, call.key, call.session, recipient)
            access.allow(call.principal, call.operation, call.key, call.session, recipient)
            return body(recipient)
        except AuditError as e:
            _audit_failed(context, e)
        except Exception as e:  # every refusal is recorded; bodies never call context.abort
            self._refuse(context, call, *self._refusal(e, call))
        raise AssertionError("unreachable")
