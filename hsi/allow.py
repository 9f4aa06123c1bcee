"""Per-method allow tables: which principals may call each method of each service, deny by default."""

from __future__ import annotations

from hsi.conversions import conversion_enclave
from hsi.plan import CLIENT, Plan
from hsi.policy import Policy, TeeZone
from hsi.transport.auth import ANY
from protos import keys_pb2, orchestrator_pb2, zone_pb2

ZONE_SERVICE = zone_pb2.DESCRIPTOR.services_by_name["Zone"].full_name
KEY_SERVICE = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name
ORCHESTRATOR_SERVICE = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name

AllowTable = dict[str, frozenset[str]]


def zone_allow_table(policy: Policy, plan: Plan, zone: str) -> AllowTable:
    """Per-method principals allowed to call a zone: the runtime drives it; only the plan's senders push to it."""
    runtime = frozenset({policy.runtime_principal})
    senders: set[str] = set()
    for c in plan.conversions:
        if c.to_zone != zone:
            continue
        if c.from_zone == CLIENT:
            senders.add(policy.runtime_principal)
        else:
            senders.update(policy.principal(p, c.from_zone) for p in policy.zone_parties(c.from_zone))
        if c.kind in ("he->mpc", "mpc->he"):  # the enclave delivers the converted piece
            he, mpc = (c.from_zone, c.to_zone) if c.kind == "he->mpc" else (c.to_zone, c.from_zone)
            enclave, enclave_party = conversion_enclave(policy, he, mpc)
            senders.add(policy.principal(enclave_party, enclave))
    m = f"/{ZONE_SERVICE}/"
    # The key holder installs public material: the TEE key service, or (while a policy has no tee zone)
    # the client, which then holds the key itself.
    key_holders = frozenset(policy.principal(z.party, n) for n, z in policy.zones_of(TeeZone).items()) or runtime
    return {
        m + "KeyRequirements": runtime | key_holders,
        m + "InstallPublicMaterial": key_holders,
        m + "LoadStage": runtime,
        m + "RunStage": runtime,
        m + "Transfer": runtime,
        m + "PullTensor": runtime,
        m + "Records": runtime,
        m + "Release": runtime,
        m + "PushTensor": frozenset(senders),
    }


def key_service_allow_table() -> AllowTable:
    """Every KeyService method is open at the transport layer to authenticated principals: the enclave's
    grants decide (and audit) each call, so a refusal is recorded rather than lost in the interceptor."""
    methods = keys_pb2.DESCRIPTOR.services_by_name["KeyService"].methods_by_name
    return {f"/{KEY_SERVICE}/{m}": frozenset({ANY}) for m in methods}


def orchestrator_allow_table(policy: Policy) -> AllowTable:
    """Only principals of the client party may use the client's orchestrator."""
    client = frozenset({f"{policy.client}/*"})
    return {f"/{ORCHESTRATOR_SERVICE}/{m}": client for m in ("Plan", "Embed", "Generate")}
