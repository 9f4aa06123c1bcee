"""Who is who: a principal (`party/zone`, as a certificate names it) and a viewer of the privacy report."""

from __future__ import annotations

import re
from dataclasses import dataclass

RUNTIME = "runtime"  # the zone name of the runtime's principal at the client
_VIEWER = re.compile(r"^(?P<party>[^\s/()]+) \(enclave (?P<enclave>[^\s/()]+)\)$")


class PrincipalError(ValueError):
    """A principal name that is not `<party>/<zone>`."""


@dataclass(frozen=True, order=True)
class Principal:
    """A process of the deployment as its certificate names it: `party/zone` (zone `runtime` for the runtime,
    `admin` for an operator)."""

    party: str
    zone: str

    def __post_init__(self) -> None:
        for part in (self.party, self.zone):
            if not part or "/" in part or part != part.strip():
                raise PrincipalError(f"principal must be <party>/<zone>, got {self.party!r}/{self.zone!r}")

    def __str__(self) -> str:
        return f"{self.party}/{self.zone}"

    @classmethod
    def parse(cls, text: str) -> Principal:
        """The principal `text` names; PrincipalError unless it is exactly `<party>/<zone>`."""
        party, sep, zone = text.partition("/")
        if not sep:
            raise PrincipalError(f"principal must be <party>/<zone>, got {text!r}")
        return cls(party, zone)

    @classmethod
    def parse_or_none(cls, text: str | None) -> Principal | None:
        """The principal `text` names, or None for a missing or malformed name (an unauthenticated peer)."""
        if not text:
            return None
        try:
            return cls.parse(text)
        except PrincipalError:
            return None


@dataclass(frozen=True, order=True)
class Viewer:
    """Whoever sees a tensor in the privacy report: a party's hosts, or the enclave of a tee zone at a party
    (which its host cannot look into)."""

    party: str
    enclave: str | None = None

    def __str__(self) -> str:
        return self.party if self.enclave is None else f"{self.party} (enclave {self.enclave})"

    @classmethod
    def parse(cls, text: str) -> Viewer:
        """The viewer a privacy-report key names: `party` or `party (enclave zone)`."""
        m = _VIEWER.match(text)
        if m:
            return cls(m["party"], m["enclave"])
        if not text or any(c in text for c in " /()"):
            raise ValueError(f"not a privacy-report viewer: {text!r}")
        return cls(text)
