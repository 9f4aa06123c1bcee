"""DCF keys evaluate to shares of [x < alpha] and nothing else; the one-round comparison from them equals the
sign of the shared value over the whole range it is exact for, and the dealer receives only sizes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
import torch

from zones.mpc import dcf
from zones.mpc.local import run_parties

U64 = np.uint64


def _seeds(n: int) -> np.ndarray:
    return np.frombuffer(os.urandom(16 * n), dtype=U64).reshape(n, 2).copy()


@pytest.mark.parametrize("bits", [1, 8, 31, 32])
def test_dcf_outputs_add_up_to_beta_below_alpha_and_zero_elsewhere(bits: int) -> None:
    rng = np.random.default_rng(bits)
    n = 3000
    top = (1 << bits) - 1
    alpha = rng.integers(0, top, n, dtype=U64, endpoint=True)
    alpha[:4] = [0, 1, top, top - 1][:4] if bits > 1 else [0, 1, 1, 0]
    beta = rng.integers(0, 2**64 - 1, n, dtype=U64, endpoint=True)
    s0, s1 = _seeds(n), _seeds(n)
    cw = dcf.Corrections.from_words(dcf.gen(alpha, beta, s0, s1, bits).words(), bits)  # as it travels
    with np.errstate(over="ignore"):
        for x in (alpha, alpha - U64(1), alpha + U64(1), np.zeros(n, U64), np.full(n, top, U64),
                  rng.integers(0, top, n, dtype=U64, endpoint=True)):
            x = x & U64(top)
            got = dcf.evaluate(0, s0, cw, x) + dcf.evaluate(1, s1, cw, x)
            assert np.array_equal(got, np.where(x < alpha, beta, U64(0)))
    # one key alone gives ring elements that do not repeat, not the 0/beta it shares
    alone = dcf.evaluate(0, s0, cw, np.zeros(n, U64))
    assert len(np.unique(alone)) > n * 0.99


def test_dcf_refuses_inputs_it_cannot_take() -> None:
    s = _seeds(2)
    with pytest.raises(ValueError, match="1..32 bits"):
        dcf.gen(np.zeros(2, U64), np.ones(2, U64), s, s, 33)
    with pytest.raises(ValueError, match="alpha must be a vector of 4-bit values"):
        dcf.gen(np.array([16, 1], U64), np.ones(2, U64), s, s, 4)
    cw = dcf.gen(np.array([3, 1], U64), np.ones(2, U64), s, _seeds(2), 4)
    with pytest.raises(ValueError, match="x must be a vector of 4-bit values"):
        dcf.evaluate(0, s, cw, np.array([1, 17], U64))
    with pytest.raises(ValueError, match="5-bit inputs are 17 words per element, not \\(14,\\)"):
        dcf.Corrections.from_words(cw.words(), 5)


def _compare(values: torch.Tensor) -> dict[str, Any]:
    from zones.mpc.compat import import_crypten

    crypten = import_crypten()
    comm = crypten.communicator.get()
    x = crypten.cryptensor(values, src=0)
    before = comm.traffic()
    bits = x < 0
    after = comm.traffic()
    dealer = comm.get_ttp_rank()
    sent = comm.mesh.counts[dealer][3]
    both = crypten.cat([x, -x]) < 0  # twice the elements: above the limit, so CrypTen's circuit
    return {"bits": bits.get_plain_text(), "scale": int(bits._tensor.encoder.scale),
            "rounds": after["rounds"] - before["rounds"], "bytes": after["bytes"] - before["bytes"],
            "to_dealer": sent, "circuit_rounds": comm.traffic()["rounds"] - after["rounds"],
            "both": both.get_plain_text()}


def test_comparison_is_exact_over_its_range_in_one_round_and_the_dealer_gets_no_tensor() -> None:
    unit = 2.0 ** -16
    # the range's ends: float32 holds 32767.5 and -32768 exactly
    edges = torch.tensor([0.0, unit, -unit, 1.0, -1.0, 32767.0, -32767.0, 32767.5, -32768.0])
    values = torch.cat([edges, torch.randn(20000) * 100, (torch.rand(20000) - 0.5) * 65535])
    parties = run_parties(_compare, (values,), ttp=True, comparisons=f"dcf:{values.numel()}")
    want = (torch.round(values * 2**16) < 0).float()
    negated = (torch.round(-values * 2**16) < 0).float()
    for p in parties:
        assert torch.equal(p["bits"].float(), want) and p["scale"] == 1
        assert p["rounds"] == 1 and p["bytes"] == 8 * values.numel()  # one opening of the masked value
        assert torch.equal(p["both"].float(), torch.cat([want, negated])) and p["circuit_rounds"] >= 7
    # what reached the dealer: the seeds' set-up acknowledgements aside, party 0's pickled requests (sizes)
    assert parties[1]["to_dealer"] == 0
    assert parties[0]["to_dealer"] < 2000, parties[0]


def test_comparison_protocols_by_name() -> None:
    from zones.mpc.fss import limit

    assert limit("circuit") == 0 and limit("dcf") > 2**62 and limit("dcf:4096") == 4096
    for bad in ("dcf:", "dcf:-3", "dcf:0", "fss", "circuit:9"):
        with pytest.raises(ValueError, match="comparisons are `circuit`, `dcf` or `dcf:N`"):
            limit(bad)


def _pooled(values: torch.Tensor) -> dict[str, Any]:
    from zones.mpc import fss
    from zones.mpc.compat import import_crypten
    from zones.mpc.key_pool import PoolState

    crypten = import_crypten()
    comm = crypten.communicator.get()
    x = crypten.cryptensor(values, src=0)
    state = PoolState(None, limit=10 * values.numel())
    fss.use_pool(state)
    online = (x < 0).get_plain_text()  # no pool yet: dealt online
    pool = fss.refill(state.refill_size(), "earlier")  # what the zone's next session would get
    fss.use_pool(PoolState(pool, limit=state.limit))
    dealer = comm.get_ttp_rank()
    before, dealer_before = comm.traffic(), list(comm.mesh.counts[dealer])
    pooled = x < 0
    after, dealer_after = comm.traffic(), list(comm.mesh.counts[dealer])
    again = (x < 0).get_plain_text()  # the pool is used up: dealt online again, never a key twice
    fss.use_pool(None)
    return {"online": online, "pooled": pooled.get_plain_text(), "again": again,
            "rounds": after["rounds"] - before["rounds"], "bytes": after["bytes"] - before["bytes"],
            "dealer": [a - b for a, b in zip(dealer_after, dealer_before, strict=True)],
            "left": pool.remaining(), "size": len(pool.r), "r": pool.r[:4].copy()}


def test_keys_dealt_ahead_serve_one_comparison_each_without_the_dealer() -> None:
    values = torch.cat([torch.tensor([0.0, 2.0 ** -16, -(2.0 ** -16), 32767.5, -32768.0]), torch.randn(3000) * 50])
    parties = run_parties(_pooled, (values,), ttp=True, comparisons=f"dcf:{values.numel()}")
    want = (torch.round(values * 2**16) < 0).float()
    for p in parties:
        for key in ("online", "pooled", "again"):
            assert torch.equal(p[key].float(), want), key
        assert p["size"] == values.numel() and p["left"] == 0
        assert p["rounds"] == 2  # the parties compare their pools' digests, then open x + r
        assert p["bytes"] == 8 * values.numel() + 8 * 4  # the masked values, and a 32-byte digest
        assert p["dealer"] == [0, 0, 0, 0]  # nothing from the dealer, nothing to it
    assert not np.array_equal(parties[0]["r"], parties[1]["r"])  # each party's own share of r


def test_a_pool_serves_only_when_every_party_holds_it_and_never_a_key_twice() -> None:
    from zones.mpc.key_pool import KeyPool, PoolState

    def pool(origin: str, n: int = 5) -> KeyPool:
        return KeyPool(origin, np.arange(n), np.zeros((n, 2), np.int64), np.zeros((n, 3), np.int64))

    same = PoolState(pool("s1"), limit=100)
    assert same.keys(3, lambda d: True) is not None and same.pool is not None and same.pool.remaining() == 2
    assert same.keys(3, lambda d: True) is None  # too few left: dealt online, the two left stay unused
    took = same.keys(2, lambda d: True)
    assert took is not None and list(took[0]) == [3, 4] and same.consumed == 8 and same.refill_size() == 8
    assert PoolState(pool("s1", 50), limit=100).refill_size() == 0  # compared nothing: deals nothing
    big = PoolState(pool("s1", 50), limit=100)
    big.keys(3, lambda d: True)
    assert big.refill_size() == 50  # a smaller request keeps the pool as large as the largest recent one
    assert same.pool is not None
    with pytest.raises(ValueError, match="3 keys asked of a pool with 0 left"):
        same.pool.take(3)
    other = PoolState(pool("s2"), limit=4)
    assert other.keys(1, lambda d: False) is None and other.pool is None  # a party holds another pool
    assert other.keys(1, lambda d: True) is None and other.refill_size() == 4  # its given 5, capped by the limit
    off = PoolState(pool("s3"), limit=0)
    assert off.keys(1, lambda d: True) is None and off.agreed is None and off.refill_size() == 0
