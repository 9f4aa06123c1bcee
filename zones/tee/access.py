"""HSM-style access control: grants of (principal, key, operations, limits); deny by default.

Usage counts for the limits come from the audit log, so they survive a restart.
"""

from __future__ import annotations

import grpc

from hsi.policy import KeyGrant
from zones.tee.audit import AuditLog


class Denied(Exception):
    """A refused call, with its gRPC status and reason."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# Calls any authenticated principal may make: they reveal nothing secret.
OPEN_OPERATIONS = frozenset({"attest"})
# Calls whose result goes to a recipient: an MPC party (decrypt_to_share), an HE zone (encrypt_share,
# encrypt_result), a key (reencrypt). decrypt_in_enclave has none: the plaintext stays in the enclave.
RECIPIENT_OPERATIONS = frozenset({"decrypt_to_share", "encrypt_share", "reencrypt", "encrypt_result"})


class AccessControl:
    """Decides every call and records the decision in the audit log."""

    def __init__(self, grants: list[KeyGrant], audit: AuditLog) -> None:
        self.grants = grants
        self.audit = audit

    def _grant(self, principal: str, operation: str, key: str) -> KeyGrant | None:
        for g in self.grants:
            if g.principal == principal and g.key in (key, "*") and operation in g.operations:
                return g
        return None

    def authorize(self, principal: str, operation: str, key: str, session: str = "", recipient: str = "") -> None:
        """Record and allow the call, or record and raise Denied (PERMISSION_DENIED / RESOURCE_EXHAUSTED).

        Operations whose result goes to someone (RECIPIENT_OPERATIONS) are allowed only towards a recipient
        the grant names."""
        try:
            self._decide(principal, operation, key, session, recipient)
        except Denied as d:
            self.audit.append(principal, operation, key, session, "deny", d.reason)
            raise
        self.audit.append(principal, operation, key, session, "allow",
                          f"granted, to {recipient}" if recipient else "granted")

    def _decide(self, principal: str, operation: str, key: str, session: str, recipient: str) -> None:
        if operation in OPEN_OPERATIONS:
            return
        grant = self._grant(principal, operation, key)
        if grant is None:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                         f"principal {principal!r} has no grant for {operation} on key {key!r}")
        if operation in RECIPIENT_OPERATIONS and recipient not in grant.recipients:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                         f"the grant of {operation} on key {key!r} to {principal!r} does not name {recipient!r} as a "
                         f"recipient (it names {grant.recipients or 'none'})")
        if grant.max_calls is None and grant.max_sessions is None:
            return
        mine = [r for r in self.audit.records() if r.decision == "allow" and r.principal == principal
                and r.operation == operation and r.key == key]
        if grant.max_calls is not None and len(mine) >= grant.max_calls:
            raise Denied(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"grant of {operation} on {key!r} to {principal!r} allows {grant.max_calls} calls; "
                         "all used")
        sessions = {r.session for r in mine}
        if grant.max_sessions is not None and session not in sessions and len(sessions) >= grant.max_sessions:
            raise Denied(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"grant of {operation} on {key!r} to {principal!r} allows {grant.max_sessions} sessions; "
                         "all used")
