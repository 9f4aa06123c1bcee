"""Linear layers with fixed shared weights: one Beaver mask per weight, kept across calls and sessions.

A Beaver matmul of shared x by shared W opens x - a and W - b. CrypTen draws a fresh triple per call,
so every linear layer re-opens a weight-sized matrix (for SmolLM2, 2 GB per generated token). A weight
does not change, so its mask b is drawn once: W - b is opened once, the dealer keeps b, and each call needs
only a fresh a with c = a @ b from the dealer and the opening of x - a. The opened values stay uniformly
masked: W - b is opened once per b, and every x - a uses a fresh a. The zones keep b's shares, W - b and the
dealer's b between sessions (`weight_masks`, up to the policy's `keep_weight_masks_mb`), so a later session
opens no weight at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from zones.mpc import randomness, triples
from zones.mpc.compat import import_crypten
from zones.mpc.links import LinkError
from zones.mpc.prg import Prg
from zones.mpc.weight_masks import Entry, MaskTracker, SessionMasks


def _parts() -> tuple[Any, Any, Any, Prg]:
    crypten = import_crypten()
    from crypten.mpc.provider.ttp_provider import TTPClient

    return crypten, crypten.communicator.get(), TTPClient.get(), randomness.dealer_stream()


class FixedWeight:
    """A shared weight (d_in, d_out) by its mask: this party's share of b, and public W - b."""

    def __init__(self, key: str, b: torch.Tensor, masked: torch.Tensor, scale: int) -> None:
        self.key, self.b, self.masked, self.scale = key, b, masked, scale

    def size(self) -> torch.Size:
        """The weight's shape."""
        return self.masked.size()

    def apply(self, x: Any) -> Any:
        """x @ W for a shared x (..., d_in): one opening of x - a, one dealer request sent before it."""
        crypten, comm, _, stream = _parts()
        a = stream.ring(x.size())
        size = x.size()[:-1] + self.masked.size()[-1:]
        c = triples.dealt("fixed_triple", (self.key, x.size()), {}, size, lambda: stream.ring(size))
        e = triples.reveal_or_end(lambda masked: comm.all_reduce(masked[0]), [x.share - a])  # x - a, public
        z = e.matmul(self.b) + a.matmul(self.masked) + c()
        if comm.get_rank() == 0:
            z = z + e.matmul(self.masked)
        precision = x._tensor.encoder._precision_bits
        out = crypten.mpc.MPCTensor.from_shares(z, precision=precision)
        out._tensor.div_(self.scale)  # back to x's scale: CrypTen's truncation
        return out


_DEALER_DISAGREES = bytes(32)  # never a SHA-256 digest of kept masks


def agree(tracker: MaskTracker) -> bool:
    """Whether every compute party and the dealer keep the same masks (same weights, drawn in the same sessions):
    party 0 asks the dealer, then the compute parties exchange their digests."""
    _, comm, _, _ = _parts()
    digest = tracker.kept.digest()
    if comm.get_rank() == 0:
        triples.request("mask_digest", digest)
        if not int(triples.receive(torch.Size([1]))[0]):
            digest = _DEALER_DISAGREES  # no party holds it: the comparison below fails everywhere
    return triples.all_same(digest)


def fixed_weight(key: str, share: Callable[[], Any], scale: int, tracker: MaskTracker, session: str
                 ) -> FixedWeight:
    """The weight `key` by its mask: the one kept from an earlier session when every party and the dealer keep
    it, else W (shared by `share()`) masked with a fresh b, W - b opened and kept (if it fits the limit)."""
    _, comm, ttp, stream = _parts()
    if tracker.agreed is None:  # the session's first weight
        tracker.agreed = agree(tracker)
        if not tracker.agreed:
            tracker.drop_all()
    kept = tracker.kept.entries.get(key)
    if kept is not None and kept.masked is not None:
        return FixedWeight(key, torch.from_numpy(kept.mask), torch.from_numpy(kept.masked), scale)
    weight = share()
    size = weight.size()
    b = stream.ring(size)  # from the seed this party shares with the dealer
    if comm.get_rank() == 0:  # the dealer draws the same b from the seeds
        ttp.ttp_request("fixed_mask", None, key, size, session, fresh=tracker.tell_dealer)
        tracker.tell_dealer = False
    masked = comm.all_reduce(weight.share - b)  # W - b, public
    tracker.add(key, Entry(session, b.numpy(), masked.numpy()))
    return FixedWeight(key, b, masked, scale)


def serve_dealer(tracker: MaskTracker) -> SessionMasks | None:
    """Run CrypTen's trusted third party, able also to keep per-weight masks (`tracker`: those kept from earlier
    sessions), until rank 0 terminates it; the masks this session kept, None when a party left mid-session.

    Requests marked `reply: tensor` (this project's, whose result shape party 0 knows) are answered with the
    result alone, one message; CrypTen's own requests with its size object and a broadcast, three.
    """
    crypten = import_crypten()
    from crypten.mpc.provider.ttp_provider import TTPServer

    comm = crypten.communicator.get()

    class _Dealer(TTPServer):
        def __init__(self) -> None:  # CrypTen's set-up (crypten.init() has run), then this project's loop
            self.masks = {k: torch.from_numpy(e.mask) for k, e in tracker.kept.entries.items()}
            self.ttp_group = comm.ttp_group
            self.comm_group = comm.ttp_comm_group
            self.device = "cpu"
            self._setup_generators()  # os.urandom seeds, one per party (`randomness`)

        def serve(self) -> None:
            while True:
                message = comm.recv_obj(0, self.ttp_group)
                if message == "terminate":
                    return
                self.device = message["device"]
                result = getattr(self, message["function"])(*message["args"], **message["kwargs"])
                if message.get("reply") == triples.REPLY_TENSOR:
                    comm.raw_send(result, 0)
                else:
                    comm.send_obj(result.size(), 0, self.ttp_group)
                    comm.broadcast(result, comm.get_ttp_rank(), self.comm_group)

        def mask_digest(self, digest: bytes) -> torch.Tensor:
            return torch.tensor([int(digest == tracker.kept.digest())], dtype=torch.long)

        def fixed_mask(self, key: str, size: torch.Size, session: str, fresh: bool = False) -> torch.Tensor:
            if fresh:  # the parties draw every mask afresh this session
                tracker.drop_all()
            self.masks[key] = self._get_additive_PRSS(size)
            tracker.add(key, Entry(session, self.masks[key].numpy()))
            return torch.zeros(1, dtype=torch.long)

        def dcf_keys(self, size: torch.Size) -> torch.Tensor:
            from zones.mpc import fss

            mine, theirs = fss.deal(self._get_generators(device=self.device), size)
            comm.raw_send(theirs, 1)  # party 1's keys; party 0's go back as the request's reply
            return mine

        def fixed_triple(self, key: str, size_a: torch.Size) -> torch.Tensor:
            a = self._get_additive_PRSS(size_a)
            if key not in self.masks:
                raise RuntimeError(f"a triple for weight {key!r} was asked, but the dealer holds no mask for it")
            c = a.matmul(self.masks[key])
            return c - self._get_additive_PRSS(c.size(), remove_rank=True)

    try:
        _Dealer().serve()
    except (RuntimeError, LinkError):  # a party left mid-session (CrypTen's server ends the same way)
        return None
    return tracker.result()
