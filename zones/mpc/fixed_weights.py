"""Linear layers with fixed shared weights: one Beaver mask per weight and session, not per call.

A Beaver matmul of shared x by shared W opens x - a and W - b. CrypTen draws a fresh triple per call,
so every linear layer re-opens a weight-sized matrix (for SmolLM2, 2 GB per generated token). A weight
does not change within a session, so its mask b is drawn once: W - b is opened once, the dealer keeps b,
and each call needs only a fresh a with c = a @ b from the dealer and the opening of x - a. The opened
values stay uniformly masked: W - b is opened once per b, and every x - a uses a fresh a.
"""

from __future__ import annotations

from typing import Any

import torch

from zones.mpc import triples
from zones.mpc.compat import import_crypten


def _parts() -> tuple[Any, Any, Any, Any]:
    crypten = import_crypten()
    from crypten.common.rng import generate_random_ring_element
    from crypten.mpc.provider.ttp_provider import TTPClient

    return crypten, crypten.communicator.get(), TTPClient.get(), generate_random_ring_element


class FixedWeight:
    """A shared weight (d_in, d_out) with its session mask: this party's share of b, and public W - b."""

    def __init__(self, key: str, weight: Any) -> None:
        _, comm, ttp, ring = _parts()
        gen = ttp.get_generator(device=None)
        size = weight.size()
        b = ring(size, generator=gen)
        if comm.get_rank() == 0:
            ttp.ttp_request("fixed_mask", None, key, size)  # the dealer draws the same b from the seeds
        self.key = key
        self.scale = int(weight._tensor.encoder.scale)
        self.masked = comm.all_reduce(weight.share - b)  # W - b, public
        self.b = b

    def size(self) -> torch.Size:
        """The weight's shape."""
        return self.masked.size()

    def apply(self, x: Any) -> Any:
        """x @ W for a shared x (..., d_in): one opening of x - a, one dealer request sent before it."""
        crypten, comm, ttp, ring = _parts()
        gen = ttp.get_generator(device=None)
        a = ring(x.size(), generator=gen)
        c = triples.dealt("fixed_triple", (self.key, x.size()), {},
                          lambda: ring(x.size()[:-1] + self.masked.size()[-1:], generator=gen))
        e = triples.reveal_or_end(lambda masked: comm.all_reduce(masked[0]), [x.share - a])  # x - a, public
        z = e.matmul(self.b) + a.matmul(self.masked) + c()
        if comm.get_rank() == 0:
            z = z + e.matmul(self.masked)
        precision = x._tensor.encoder._precision_bits
        out = crypten.mpc.MPCTensor.from_shares(z, precision=precision)
        out._tensor.div_(self.scale)  # back to x's scale: CrypTen's truncation
        return out


def serve_dealer() -> None:
    """Run CrypTen's trusted third party, able also to keep per-weight masks, until rank 0 terminates it."""
    import_crypten()
    from crypten.mpc.provider.ttp_provider import TTPServer

    class _Dealer(TTPServer):
        def __init__(self) -> None:
            self.masks: dict[str, torch.Tensor] = {}
            super().__init__()  # serves requests until "terminate"

        def fixed_mask(self, key: str, size: torch.Size) -> torch.Tensor:
            self.masks[key] = self._get_additive_PRSS(size)
            return torch.zeros(1, dtype=torch.long)

        def fixed_triple(self, key: str, size_a: torch.Size) -> torch.Tensor:
            a = self._get_additive_PRSS(size_a)
            c = a.matmul(self.masks[key])
            return c - self._get_additive_PRSS(c.size(), remove_rank=True)

    _Dealer()
