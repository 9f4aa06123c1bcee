"""Where the enclave's conversion results go: the policy's MPC and HE zone processes, checked by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hsi.ckks.packing import AnyPacking, input_packing
from hsi.policy import HeZone, MpcZone, Policy
from hsi.transport.tensor import StoredTensor

# (session, tensor name, tensor, to zone, to party): push a tensor to a zone process, as the enclave's zone
Push = Callable[[str, str, StoredTensor, str, str], None]
# (session, tensor name, tensor received, sender principal): the enclave's receipt of an incoming tensor, kept only
# once the call was granted, its stream intact and its conversion done (a refused call leaves none)
Record = Callable[[str, str, StoredTensor, str], None]


@dataclass
class Delivery:
    """The enclave's outlets: it pushes shares to MPC parties and ciphertexts to HE zones of its policy."""

    policy: Policy
    push: Push
    record: Record
    max_tensor_bytes: int

    def mpc_recipient(self, zone: str, party: str, share_index: int, share_count: int | None = None) -> str:
        """The principal of MPC zone `zone` at `party`, which must hold share `share_index` of the zone's
        `share_count` (when given) shares; ValueError if not."""
        z = self.policy.zones.get(zone)
        if not isinstance(z, MpcZone):
            raise ValueError(f"{zone!r} is not an MPC zone of policy {self.policy.name!r}")
        names = list(z.parties)
        if party not in names:
            raise ValueError(f"MPC zone {zone!r} has no party {party!r}")
        if names.index(party) != share_index:
            raise ValueError(f"party {party!r} holds share {names.index(party)} of zone {zone!r}, not {share_index}")
        if share_count is not None and share_count != len(names):
            raise ValueError(f"MPC zone {zone!r} has {len(names)} shares, not {share_count}")
        return self.policy.principal(party, zone)

    def he_recipient(self, zone: str, key: str) -> str:
        """The principal of HE zone `zone`, which must compute under `key`; ValueError if not."""
        z = self.policy.zones.get(zone)
        if not isinstance(z, HeZone):
            raise ValueError(f"{zone!r} is not an HE zone of policy {self.policy.name!r}")
        if z.key != key:
            raise ValueError(f"HE zone {zone!r} computes under key {z.key!r}, not {key!r}")
        return self.policy.principal(z.party, zone)

    def packing(self, zone: str, tokens: int) -> AnyPacking:
        """The slot layout HE zone `zone` takes a tensor of `tokens` tokens in."""
        z = self.policy.zones[zone]
        assert isinstance(z, HeZone)
        return input_packing(z, tokens)

    def party_of(self, zone: str) -> str:
        """The party of a single-process zone."""
        return self.policy.zones[zone].party  # type: ignore[union-attr]
