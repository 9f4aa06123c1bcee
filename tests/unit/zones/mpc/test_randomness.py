"""The MPC zone's randomness is cryptographic: an AES-256-CTR stream over os.urandom seeds for every mask, triple
and zero-sharing, CrypTen's torch generators unreachable (they raise if touched), and private ops under it still
match plaintext."""

from __future__ import annotations

import os
import types
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from zones.mpc import randomness
from zones.mpc.compat import import_crypten
from zones.mpc.local import run_parties
from zones.mpc.prg import SEED_BYTES, Prg, fresh_seed

SEED = bytes(range(SEED_BYTES))


# -- the PRG ----------------------------------------------------------------------------------------------------

def test_prg_is_the_aes_256_ctr_keystream() -> None:
    blocks = Cipher(algorithms.AES(SEED), modes.ECB()).encryptor()  # the reference: AES of counters 0, 1, ...
    prg = Prg(SEED)
    drawn = b"".join(t.numpy().tobytes() for t in (prg.ring(3), prg.ring((5, 7)), prg.ring(40000)))  # 320304 B
    counters = b"".join(i.to_bytes(16, "big") for i in range(len(drawn) // 16 + 1))
    assert drawn == blocks.update(counters)[:len(drawn)]


def test_same_seed_same_stream_different_seeds_independent() -> None:
    a, b, c = Prg(SEED), Prg(SEED), Prg(bytes(SEED_BYTES))
    x = a.ring((64, 1024))
    assert torch.equal(x, b.ring(64 * 1024).view(64, 1024))  # the stream does not depend on how it is cut
    assert torch.equal(a.bits(100, 1), b.bits(100, 1))
    y = c.ring((64, 1024))
    assert int((x == y).sum()) == 0
    agreement = float(((x ^ y) >= 0).double().mean())  # top bits agree about half the time
    assert abs(agreement - 0.5) < 0.01
    assert not torch.equal(a.ring(8), a.ring(8))  # a stream moves on


def test_ring_elements_are_uniform_over_the_whole_ring() -> None:
    x = Prg(SEED).ring(1 << 16)
    assert x.dtype == torch.int64
    assert int(x.min()) < -(2**62) and int(x.max()) > 2**62  # no small range
    assert len(torch.unique(x)) == x.numel()
    as_unsigned = x.numpy().view(np.uint64)
    for bit in (63, 62, 61, 60, 56, 32, 1, 0):
        ones = float(((as_unsigned >> np.uint64(bit)) & np.uint64(1)).mean())
        assert abs(ones - 0.5) < 0.02, (bit, ones)  # 8 sigma
    top_byte = np.bincount((as_unsigned >> np.uint64(56)).astype(np.int64), minlength=256)
    assert top_byte.min() > 256 - 6 * 16 and top_byte.max() < 256 + 6 * 16  # every top byte value, evenly


def test_bits_are_uniform_below_their_length() -> None:
    prg = Prg(SEED)
    one = prg.bits(1 << 14, bitlength=1)
    assert set(one.tolist()) == {0, 1} and abs(float(one.double().mean()) - 0.5) < 0.03
    twenty = prg.bits((128, 128), bitlength=20)
    assert int(twenty.min()) >= 0 and int(twenty.max()) < 2**20
    assert abs(float((twenty >> 19).double().mean()) - 0.5) < 0.03
    assert torch.equal(Prg(SEED).bits(10), Prg(SEED).ring(10))
    with pytest.raises(ValueError, match="bitlength"):
        prg.bits(4, bitlength=65)


def test_seed_must_be_256_bits() -> None:
    for bad in (b"", SEED[:16], SEED + b"x"):
        with pytest.raises(ValueError, match="32 bytes"):
            Prg(bad)
    assert "seed" not in repr(Prg(SEED)).lower() and SEED.hex() not in repr(Prg(SEED))


# -- seeds from the OS CSPRNG -----------------------------------------------------------------------------------

class _Urandom:
    """os.urandom that hands out known seeds and records every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        return bytes([len(self.calls)]) * n


def test_fresh_seeds_and_the_local_stream_come_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _Urandom()
    monkeypatch.setattr(os, "urandom", fake)
    assert fresh_seed() == b"\x01" * 32 and fake.calls == [32]
    monkeypatch.setattr(randomness, "_local", None)
    assert torch.equal(randomness.local().ring(16), Prg(b"\x02" * 32).ring(16))
    assert fake.calls == [32, 32]


class _Done:
    def wait(self) -> None:
        pass


def test_pairwise_seeds_come_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    crypten = import_crypten()
    fake = _Urandom()
    neighbour = bytes([7]) * 32
    sent: list[tuple[bytes, int]] = []

    def isend(tensor: torch.Tensor, dst: int) -> _Done:
        sent.append((tensor.numpy().tobytes(), dst))
        return _Done()

    def irecv(tensor: torch.Tensor, src: int) -> _Done:
        tensor.copy_(torch.frombuffer(bytearray(neighbour), dtype=torch.int64))
        return _Done()

    comm = types.SimpleNamespace(get_world_size=lambda: 3, get_rank=lambda: 1, isend=isend, irecv=irecv)
    monkeypatch.setattr(crypten.communicator, "get", lambda: comm)
    monkeypatch.setattr(os, "urandom", fake)
    monkeypatch.setattr(randomness, "_pairwise", {})
    crypten._setup_prng()  # what crypten.init() runs at a compute party
    assert fake.calls == [32] and sent == [(b"\x01" * 32, 2)]  # our seed, to the next party
    assert torch.equal(randomness.pairwise("next").ring(8), Prg(b"\x01" * 32).ring(8))
    assert torch.equal(randomness.pairwise("prev").ring(8), Prg(neighbour).ring(8))
    assert isinstance(crypten.generators["prev"][torch.device("cpu")], randomness.Unreachable)


def test_dealer_seeds_come_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    crypten = import_crypten()
    from crypten.mpc.provider.ttp_provider import TTPClient, TTPServer

    fake = _Urandom()
    sent: dict[int, bytes] = {}

    def raw_send(tensor: torch.Tensor, dst: int) -> None:
        sent[dst] = tensor.numpy().tobytes()

    def raw_recv(tensor: torch.Tensor, src: int) -> torch.Tensor:
        assert src == 2  # from the dealer
        return tensor.copy_(torch.frombuffer(bytearray(sent[1]), dtype=torch.int64))

    comm = types.SimpleNamespace(get_world_size=lambda: 2, get_ttp_rank=lambda: 2, raw_send=raw_send,
                                 raw_recv=raw_recv)
    monkeypatch.setattr(crypten.communicator, "get", lambda: comm)
    monkeypatch.setattr(os, "urandom", fake)
    dealer = types.SimpleNamespace(ttp_group=None, device="cpu")
    TTPServer._setup_generators(dealer)
    assert fake.calls == [32, 32] and sent == {0: b"\x01" * 32, 1: b"\x02" * 32}
    party = types.SimpleNamespace(ttp_group=None)
    TTPClient._TTPClient__TTPClient._setup_generators(party)  # party 1's side
    got = TTPClient._TTPClient__TTPClient.get_generator(party, "cpu").ring(8)
    assert torch.equal(got, TTPServer._get_generators(dealer, "cpu")[1].ring(8))
    assert torch.equal(got, Prg(b"\x02" * 32).ring(8))
    for generator in (party.generator, dealer.generators[0], dealer.generators_cuda[1]):
        assert isinstance(generator, randomness.Unreachable)


# -- CrypTen's generators unreachable ---------------------------------------------------------------------------

def test_crypten_draws_through_the_prg_and_its_generators_raise() -> None:
    crypten = import_crypten()
    from crypten.common import rng
    from crypten.mpc.primitives import arithmetic, binary
    from crypten.mpc.provider import tfp_provider, ttp_provider

    for module in (rng, arithmetic, ttp_provider, tfp_provider):
        assert module.generate_random_ring_element is randomness.generate_random_ring_element
    for module in (rng, binary, ttp_provider, tfp_provider):
        assert module.generate_kbit_random_tensor is randomness.generate_kbit_random_tensor
    assert torch.equal(rng.generate_random_ring_element((2, 3), generator=Prg(SEED)), Prg(SEED).ring((2, 3)))

    poisoned = crypten.generators["next"][torch.device("cpu")]
    before = len(randomness.touches())
    with pytest.raises(randomness.GeneratorDisabled, match=r"crypten.generators\['next'\].*never from a torch"):
        rng.generate_random_ring_element((4,), generator=poisoned)
    with pytest.raises(randomness.GeneratorDisabled):
        poisoned.manual_seed(1)
    with pytest.raises(randomness.GeneratorDisabled):
        poisoned.initial_seed()
    assert len(randomness.touches()) == before + 3
    with pytest.raises(TypeError):  # torch itself refuses it as a generator, after asking it for __torch_function__
        torch.randint(0, 10, (3,), generator=poisoned)  # type: ignore[call-overload]
    assert len(randomness.touches()) > before + 3
    with pytest.raises(TypeError, match="refusing to draw MPC randomness from a Generator"):
        rng.generate_kbit_random_tensor((4,), generator=torch.Generator())
    with pytest.raises(ValueError, match="2\\^64 ring"):
        rng.generate_random_ring_element((4,), ring_size=2**32, generator=Prg(SEED))


# -- private ops under the new randomness -----------------------------------------------------------------------

def _private_ops() -> dict[str, Any]:
    crypten = import_crypten()
    from crypten.common import rng
    from crypten.mpc.provider.ttp_provider import TTPClient

    from zones.mpc.fixed_weights import fixed_weight
    from zones.mpc.weight_masks import MaskTracker, WeightMasks

    torch.manual_seed(5)  # the test's plaintexts, the same at every party (party 0's are shared)
    x, y, w = torch.randn(4, 6), torch.randn(4, 6), torch.randn(6, 5)
    scores = torch.linspace(-8, 8, 3 * 16).reshape(3, 16)
    sx, sy, sw, ss = (crypten.cryptensor(t, src=0) for t in (x, y, w, scores))
    got = {"mul": sx * sy, "square": sx.square(), "matmul": sx.matmul(sw), "lt": sx < sy, "softmax": ss.softmax(-1),
           "fixed": fixed_weight("w", lambda: sw, 1 << 16, MaskTracker(WeightMasks(0)), "local").apply(sx)}
    want = {"mul": x * y, "square": x * x, "matmul": x @ w, "lt": (x < y).float(),
            "softmax": torch.softmax(scores, -1), "fixed": x @ w}
    errors = {k: float((got[k].get_plain_text() - want[k]).abs().max()) for k in got}
    touched = randomness.touches()
    cpu = torch.device("cpu")
    refused = []
    for g in (*(crypten.generators[k][cpu] for k in ("prev", "next", "local", "global")), TTPClient.get().generator):
        try:
            rng.generate_random_ring_element((2,), generator=g)
        except randomness.GeneratorDisabled as e:
            refused.append(str(e))
    return {"errors": errors, "touched": touched, "refused": refused, "touches_after": len(randomness.touches()),
            "zero": randomness.zero_sharing(4096).numpy(), "share": sx.share.numpy()}


@pytest.mark.parametrize(("parties", "fast"), [(2, True), (3, False)])
def test_private_ops_never_touch_cryptens_generators(parties: int, fast: bool) -> None:
    """Two parties with this project's dealer protocol, and three with CrypTen's own TTP functions (its wraps
    for truncation included): every mask from the PRG, results within the kernels' bounds."""
    results = run_parties(_private_ops, parties=parties, ttp=True, fast=fast)
    for party in results:
        assert party["touched"] == [], party["touched"]
        assert len(party["refused"]) == 5 and party["touches_after"] == 5
        assert all("disabled" in r for r in party["refused"])
        e = party["errors"]
        assert e["mul"] < 1e-3 and e["square"] < 1e-3 and e["matmul"] < 5e-3 and e["fixed"] < 5e-3, e
        assert e["lt"] == 0 and e["softmax"] <= 1e-2, e
    zero = torch.stack([torch.from_numpy(p["zero"]) for p in results]).sum(0)  # wraps around the ring
    assert int(zero.abs().max()) == 0
    for party in results:
        part = party["zero"].view(np.uint64)
        assert abs(float((part >> np.uint64(63)).mean()) - 0.5) < 0.05  # each part ring-uniform
        assert np.abs(party["share"].astype(np.float64)).max() > 2.0**60  # a share of x is no small number
