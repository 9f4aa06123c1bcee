"""The engines this build has: each zone kind's engine, registered in hsi.kinds when its module is imported."""

from __future__ import annotations

import grpc

from hsi import kinds
from hsi.engine import ZoneEngine
from hsi.ir import ZoneKind
from hsi.policy import Policy
from hsi.transport.status import ZoneError


def register_all() -> None:
    """Import (and so register) every engine of this build and the senders of its conversions; imported on first
    use, each engine pulls in its library (OpenFHE, CrypTen, PyTorch)."""
    import zones.he.engine
    import zones.he.send
    import zones.mpc.engine
    import zones.mpc.send
    import zones.plain.engine
    import zones.plain.send
    import zones.tee.engine
    import zones.tee.send  # noqa: F401


def engine_for(kind: ZoneKind, policy: Policy, zone: str, party: str) -> ZoneEngine:
    """A new engine for a zone; ZoneError (UNIMPLEMENTED) when this build has none for the kind."""
    register_all()
    try:
        factory = kinds.engine_factory(kind)
    except LookupError as e:
        raise ZoneError(grpc.StatusCode.UNIMPLEMENTED, str(e)) from None
    return factory(policy, zone, party)
