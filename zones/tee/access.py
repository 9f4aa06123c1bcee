"""HSM-style access control: grants of (principal, key, operations, limits), deny by default; and the bounds
every request field keeps.

Usage counts for the limits come from the audit log, so they survive a restart.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import grpc

from hsi.audit import bounded
from hsi.policy import KeyGrant
from zones.tee.audit import AuditLog

# -- request bounds (documented in README's threat model): a field outside them is refused with INVALID_ARGUMENT
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a key handle: <= 128 characters of this set
MAX_KEY_CHARS = 128
MAX_ROTATIONS = 128  # rotation keys per GetPublicMaterial (selective-smollm2's HE zone needs 81)
MAX_SESSION_CHARS = 128  # printable ASCII, no spaces (a session id is a uuid4 hex of 32)
MAX_NAME_CHARS = 256  # a tensor name: printable, no line breaks
MAX_PARTY_CHARS = 64  # to_zone, to_party, source_party
MAX_DTYPE_CHARS = 16
MAX_RANK = 8
MAX_DIM = 1 << 31
MAX_META_ENTRIES = 64
MAX_META_KEY_CHARS = 64
MAX_META_CHARS = 64 << 10  # all keys and values of a header's meta together
SHOWN = 64  # characters of an offending value a refusal echoes
_INT = re.compile(r"-?[0-9]{1,12}")


class Invalid(ValueError):
    """A request field outside its bound; the message names the field and the limit (never the whole value)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def shown(value: str) -> str:
    """An offending value as a refusal may echo it: quoted, escaped, at most SHOWN characters and a marker."""
    return repr(bounded(value, SHOWN))


def check_key_name(value: str, field: str = "key") -> str:
    """A key handle: 1..128 characters of [A-Za-z0-9._-], not starting with '.', '_' or '-'."""
    if not KEY_NAME.fullmatch(value):
        raise Invalid(field, f"a key name is 1..{MAX_KEY_CHARS} characters of [A-Za-z0-9._-] starting with a "
                             f"letter or digit; got {len(value)} characters: {shown(value)}")
    return value


def check_rotations(rotations: Iterable[int], slots: int) -> list[int]:
    """At most MAX_ROTATIONS distinct indices r with 0 < |r| < slots (the key's slot count)."""
    out = list(rotations)
    if len(out) > MAX_ROTATIONS:
        raise Invalid("rotations", f"at most {MAX_ROTATIONS} rotation indices per request; got {len(out)}")
    bad = [r for r in out if not 0 < abs(r) < slots]
    if bad:
        raise Invalid("rotations", f"each index r must have 0 < |r| < {slots} (the key's slots); got {bad[:4]}")
    if len(set(out)) != len(out):
        dup = sorted({r for r in out if out.count(r) > 1})
        raise Invalid("rotations", f"each index at most once; repeated: {dup[:4]}")
    return out


def check_text(value: str, field: str, limit: int, spaces: bool = True) -> str:
    """A printable (ASCII-only when not `spaces`) string of at most `limit` characters."""
    if len(value) > limit:
        raise Invalid(field, f"at most {limit} characters; got {len(value)}: {shown(value)}")
    if not value.isprintable() or (not spaces and not (value.isascii() and " " not in value)):
        kind = "printable characters" if spaces else "printable ASCII without spaces"
        raise Invalid(field, f"only {kind}; got {shown(value)}")
    return value


def check_int(meta: Mapping[str, str], field: str, low: int, high: int, default: str | None = None) -> int:
    """An integer header field `field` in low..high (KeyError when it is missing and has no default)."""
    raw = meta[field] if default is None else meta.get(field, default)
    if not _INT.fullmatch(raw) or not low <= int(raw) <= high:
        raise Invalid(f"meta[{field!r}]", f"an integer in {low}..{high}; got {shown(raw)}")
    return int(raw)


def check_header(session: str, name: str, dtype: str, source_party: str, shape: Iterable[int],
                 meta: Mapping[str, str]) -> None:
    """A conversion stream's header fields within their bounds."""
    check_text(session, "session", MAX_SESSION_CHARS, spaces=False)
    check_text(name, "name", MAX_NAME_CHARS)
    check_text(dtype, "dtype", MAX_DTYPE_CHARS, spaces=False)
    check_text(source_party, "source_party", MAX_PARTY_CHARS, spaces=False)
    dims = list(shape)
    if len(dims) > MAX_RANK or any(not 0 <= d <= MAX_DIM for d in dims):
        raise Invalid("shape", f"at most {MAX_RANK} dimensions, each 0..{MAX_DIM}; got {dims[:MAX_RANK + 1]}")
    if len(meta) > MAX_META_ENTRIES:
        raise Invalid("meta", f"at most {MAX_META_ENTRIES} entries; got {len(meta)}")
    for k in meta:
        check_text(k, "meta key", MAX_META_KEY_CHARS, spaces=False)
    total = sum(len(k) + len(v) for k, v in meta.items())
    if total > MAX_META_CHARS:
        raise Invalid("meta", f"at most {MAX_META_CHARS} characters of keys and values together; got {total}")
    for k in ("to_zone", "to_party"):
        if k in meta:
            check_text(meta[k], f"meta[{k!r}]", MAX_PARTY_CHARS, spaces=False)
    for k in ("key", "recipient"):
        if k in meta:
            check_key_name(meta[k], f"meta[{k!r}]")


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
            self.decide(principal, operation, key, session, recipient)
        except Denied as d:
            self.deny(principal, operation, key, session, d.reason, d.code)
            raise
        self.allow(principal, operation, key, session, recipient)

    def allow(self, principal: str, operation: str, key: str, session: str = "", recipient: str = "") -> None:
        """Record an allowed call (before it proceeds)."""
        self.audit.append(principal, operation, key, session, "allow",
                          f"granted, to {recipient}" if recipient else "granted")

    def deny(self, principal: str, operation: str, key: str, session: str, reason: str,
             code: grpc.StatusCode | None = None) -> None:
        """Record a refused call, its status code first in the reason (the audit log bounds every field)."""
        self.audit.append(principal, operation, key, session, "deny", f"{code.name}: {reason}" if code else reason)

    def check_grant(self, principal: str, operation: str, key: str) -> None:
        """Denied (PERMISSION_DENIED, nothing recorded) unless `principal` holds a grant of `operation` on `key`:
        the check a call passes before anything else of it is looked at."""
        if operation not in OPEN_OPERATIONS and self._grant(principal, operation, key) is None:
            raise Denied(grpc.StatusCode.PERMISSION_DENIED,
                         f"principal {principal!r} has no grant for {operation} on key {shown(key)}")

    def decide(self, principal: str, operation: str, key: str, session: str = "", recipient: str = "") -> None:
        """Raise Denied when the grants refuse the call (recipient and limits included); records nothing."""
        if operation in OPEN_OPERATIONS:
            return
        self.check_grant(principal, operation, key)
        grant = self._grant(principal, operation, key)
        assert grant is not None
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


class PerPrincipal:
    """A bound on what each principal holds at once (e.g. open conversion streams)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, principal: str) -> Iterator[bool]:
        """One of the principal's `limit` places while the block runs (False: all are taken, none held)."""
        with self._lock:
            ok = self._held.get(principal, 0) < self.limit
            if ok:
                self._held[principal] = self._held.get(principal, 0) + 1
        try:
            yield ok
        finally:
            if ok:
                with self._lock:
                    self._held[principal] -= 1
                    if not self._held[principal]:
                        del self._held[principal]
