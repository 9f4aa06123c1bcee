"""The policy: which parties run which zones, where each op runs, what each party may see (schema and loader)."""

from hsi.policy.base import PolicyError
from hsi.policy.loader import load_policy, load_policy_text, policy_json_schema
from hsi.policy.schema import (
    Deadlines,
    KeyGrant,
    ModelSpec,
    Operation,
    Party,
    PlacementRule,
    Policy,
    PrivacyConstraint,
    TlsSettings,
    Transport,
    ZoneProcess,
)
from hsi.policy.zones import CkksParams, HeZone, HsmSettings, MpcMember, MpcZone, PlainZone, TeeZone, Zone

__all__ = [
    "CkksParams",
    "Deadlines",
    "HeZone",
    "HsmSettings",
    "KeyGrant",
    "ModelSpec",
    "MpcMember",
    "MpcZone",
    "Operation",
    "Party",
    "PlacementRule",
    "PlainZone",
    "Policy",
    "PolicyError",
    "PrivacyConstraint",
    "TeeZone",
    "TlsSettings",
    "Transport",
    "Zone",
    "ZoneProcess",
    "load_policy",
    "load_policy_text",
    "policy_json_schema",
]
