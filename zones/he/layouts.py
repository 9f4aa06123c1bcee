"""The slot layouts an HE zone takes its tensors in, and the rotation keys their linear layers need."""

from __future__ import annotations

from dataclasses import dataclass

from hsi.ckks.packing import AnyPacking, ComplexLanePacking, LanePacking, Packing, complex_lane_packing, lane_packing
from hsi.policy import HeZone
from zones.he.linear import rotation_indices


@dataclass(frozen=True)
class Layouts:
    """An HE zone's layouts: token-batched, lanes for a few tokens, complex lanes for one (each generated one);
    the lane layouts are None when the zone's width is too narrow for them or it turns lanes off."""

    batched: Packing
    lane: LanePacking | None
    single: ComplexLanePacking | None

    @classmethod
    def of(cls, zone: HeZone) -> Layouts:
        """The layouts of the policy's HE zone `zone`."""
        return cls(Packing(zone.ckks.ring_dim // 2, zone.pack_width), lane_packing(zone), complex_lane_packing(zone))

    @property
    def accepted(self) -> list[AnyPacking]:
        """Every layout a tensor of this zone may arrive in: the inputs' layouts and the linear outputs'."""
        return [self.batched] + [q for p in (self.lane, self.single) if p for q in (p, p.output)]

    def rotations(self) -> list[int]:
        """Slot rotations the linear ops of this zone need (one set for every shape under each input layout)."""
        return sorted({r for p in self.accepted if p.linear_input for r in rotation_indices(p)})
