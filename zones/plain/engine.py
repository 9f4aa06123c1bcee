"""The plain zone's engine: PyTorch on plaintext tensors; the host sees every tensor it computes on."""

from __future__ import annotations

from hsi.ir import ZoneKind
from hsi.kinds import register_engine
from zones.common.torch_engine import TorchEngine


@register_engine(ZoneKind.PLAIN)
class PlainEngine(TorchEngine):
    """Plaintext PyTorch execution at the zone's host."""
