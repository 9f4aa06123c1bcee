"""Comparison with zero in one online round, from the dealer's DCF keys (DReLU as in SIGMA, PETS 2024).

CrypTen's `_ltz` converts the shares to binary and runs a 64-bit adder circuit: 7 rounds and ~800 bytes per
element between the parties. Here, with x in RING_BITS-bit two's complement (each party reduces its share
mod 2^n, exactly), the parties open c = x + r mod 2^n for the dealer's random r (one round, 8 bytes per element
and party), and with c = c_h 2^(n-1) + c_l, r likewise:

    [x < 0] = MSB(c - r) = c_h XOR r_h XOR [c_l < r_l].

The dealer gives a DCF key pair for alpha = r_l with payload 1 - 2 r_h and shares of r_h, so the key outputs
plus the r_h shares are shares of z = r_h XOR [c_l < r_l]; then [x < 0] = c_h + (1 - 2 c_h) z, local. Every
share of r, every start seed and party 1's share of r_h come from the stream each party shares with the
dealer; the dealer receives only the request's size, and sends the correction words (to both parties) and
party 0's share of r_h. Keys dealt when the zone's previous session ended (`key_pool`, `refill`) are used first:
then a comparison sends the dealer nothing.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from zones.mpc import dcf, randomness, triples
from zones.mpc.compat import import_crypten
from zones.mpc.key_pool import KeyPool, PoolState
from zones.mpc.prg import Prg

RING_BITS = 32  # exact for |x| < 2^31 in fixed-point units: 32768 at 16 fractional bits
_MASK = (1 << RING_BITS) - 1
_LEVELS = RING_BITS - 1
_WORDS = 3 * _LEVELS + 2  # per element: dcf.Corrections.words


def _draws(g: Prg, size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """A party's share of r and its start seeds, in the order both the party and the dealer draw them."""
    return g.ring(size), g.ring(tuple(size) + (2,))


def _u64(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().numpy().reshape(-1).view(np.uint64)


def deal(streams: list[Prg], size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """The dealer's answer to a comparison of `size` elements: party 0's words (the corrections and its share
    of r_h), party 1's (the corrections)."""
    (r0, s0), (r1, s1) = _draws(streams[0], size), _draws(streams[1], size)
    offset1 = _u64(streams[1].ring(size))
    r = (_u64(r0) + _u64(r1)) & np.uint64(_MASK)
    high = r >> np.uint64(_LEVELS)
    low = r & np.uint64(_MASK >> 1)
    with np.errstate(over="ignore"):
        beta = np.uint64(1) - np.uint64(2) * high
        offset0 = high - offset1
    cw = dcf.gen(low, beta, _u64(s0).reshape(-1, 2), _u64(s1).reshape(-1, 2), _LEVELS).words()
    both = torch.from_numpy(cw.view(np.int64))
    return torch.cat([both, torch.from_numpy(offset0.view(np.int64))[:, None]], dim=1), both


_pool: PoolState | None = None  # this worker's session's pool (`use_pool`)


def use_pool(state: PoolState | None) -> None:
    """Let this process's comparisons take keys from `state`'s pool (None: deal every key online)."""
    global _pool
    _pool = state


def _dealt(size: torch.Size) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Keys for `size` elements dealt now: this party's r share and seeds, and a function that waits for the
    dealer's words (corrections, then this party's share of r_h). Party 0 sends the request."""
    comm = import_crypten().communicator.get()
    rank, n = comm.get_rank(), size.numel()
    g = randomness.dealer_stream()
    r, seeds = _draws(g, size)
    offset = g.ring(size).reshape(n, 1) if rank == 1 else None
    if rank == 0:
        triples.request("dcf_keys", size)

    def words() -> torch.Tensor:
        got = comm.raw_recv(torch.empty((n, _WORDS + (1 if rank == 0 else 0)), dtype=torch.long),
                            comm.get_ttp_rank())
        return got if offset is None else torch.cat([got, offset], dim=1)

    return r, seeds, words


def ltz(x: Any) -> Any:
    """[x < 0] for an arithmetic MPCTensor x, as 0/1 shares at scale 1 (what CrypTen's `_ltz` returns)."""
    crypten = import_crypten()
    comm = crypten.communicator.get()
    rank, size = comm.get_rank(), x.size()
    pooled = _pool.keys(x.numel(), triples.all_same) if _pool is not None else None
    if pooled is not None:
        r = torch.from_numpy(pooled[0]).reshape(size)
        seeds, words = torch.from_numpy(pooled[1]), (lambda: torch.from_numpy(pooled[2]))
    else:
        r, seeds, words = _dealt(size)
    mask = torch.tensor(_MASK, dtype=torch.long)
    masked = (x.share + r) & mask
    c = triples.reveal_or_end(lambda m: comm.all_reduce(m[0]), [masked]) & mask
    w = words()
    cw = dcf.Corrections.from_words(w[:, :_WORDS].numpy(), _LEVELS)
    opened = _u64(c)
    high = opened >> np.uint64(_LEVELS)
    z = dcf.evaluate(rank, _u64(seeds).reshape(-1, 2), cw, opened & np.uint64(_MASK >> 1))
    with np.errstate(over="ignore"):
        z = z + _u64(w[:, _WORDS])
        out = (np.uint64(1) - np.uint64(2) * high) * z + (high if rank == 0 else np.uint64(0))
    share = torch.from_numpy(out.view(np.int64).copy()).reshape(size)
    return crypten.mpc.MPCTensor.from_shares(share, precision=0)


def refill(n: int, origin: str) -> KeyPool:
    """Deal `n` keys now (at every compute party at once, the dealer serving) and keep them as a pool."""
    r, seeds, words = _dealt(torch.Size([n]))
    return KeyPool(origin, r.numpy().copy(), seeds.reshape(n, 2).numpy().copy(), words().numpy().copy())


def limit(comparisons: str) -> int:
    """The most elements a comparison takes from DCF keys, from a protocol name: `circuit` (none), `dcf`
    (every comparison) or `dcf:N` (comparisons of at most N elements; larger ones run CrypTen's circuit)."""
    if comparisons == "circuit":
        return 0
    if comparisons == "dcf":
        return sys.maxsize
    how, colon, most = comparisons.partition(":")
    if how == "dcf" and colon and most.isdigit() and int(most) > 0:
        return int(most)
    raise ValueError(f"comparisons are `circuit`, `dcf` or `dcf:N` (N elements at most), not {comparisons!r}")


def install(max_elements: int = sys.maxsize) -> None:
    """Make every CrypTen comparison (`<`, `>=`, relu, max, ...) of at most `max_elements` elements, in a
    two-party session with the TTP dealer, use `ltz`; the dealer answers `dcf_keys` requests
    (zones.mpc.fixed_weights.serve_dealer). Larger comparisons keep CrypTen's circuit: a DCF key is ~1.5 kB an
    element from the dealer, the circuit ~800 bytes between the parties and 6 more rounds."""
    crypten = import_crypten()
    if crypten.cfg.mpc.active_security or crypten.cfg.mpc.provider != "TTP":
        return
    if crypten.communicator.get().get_world_size() != 2:
        return
    circuit = crypten.mpc.MPCTensor._ltz

    def compare(x: Any) -> Any:
        return ltz(x) if x.numel() <= max_elements else circuit(x)

    crypten.mpc.MPCTensor._ltz = compare
