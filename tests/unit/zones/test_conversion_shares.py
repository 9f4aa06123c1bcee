"""What each process receives in the he<->mpc conversions: outside the enclave only ring-uniform shares (and the
HE host's own masks, which are independent of the data); the bounded values x - r and y - s form only inside it."""

from __future__ import annotations

import types
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from hsi.masking import BOUNDED, MASK_SEED, PIECES, TO_HE, bounded_share, bounded_values, hide, ring_mask
from hsi.policy import load_policy
from hsi.transport.shares import combine, ring_of, split
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from protos import zone_pb2
from tests.conftest import POLICIES
from zones.he.send import mask_into_shares
from zones.mpc.send import reencrypt

POLICY = load_policy(POLICIES / "private-minilm.yaml")
MASK_BITS = POLICY.zones["he"].mask_bits  # type: ignore[union-attr]


class _Masking:
    """The HE engine's masking, without CKKS: the 'ciphertext' is x - r in the clear, for the test to follow."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.r = np.random.default_rng(7).uniform(-(2.0**MASK_BITS), 2.0**MASK_BITS, size=x.shape)

    def mask(self, name: str, t: StoredTensor, bits: int) -> tuple[np.ndarray, StoredTensor]:
        masked = self.x - self.r
        return self.r, StoredTensor(pb.PLAIN, "float64", masked.shape, masked.tobytes(), {})

    def piece(self, name: str, t: StoredTensor) -> Any:
        return t

    def unmask(self, name: str, parts: list[Any]) -> StoredTensor:
        raise AssertionError("not in this test")


class _Outbox:
    """A zone process's outbox that records what it sends, to whom, and what it streams to the enclave."""

    def __init__(self, zone: str, party: str, engine: Any = None) -> None:
        self.policy, self.zone, self.party, self.engine = POLICY, zone, party, engine
        self.plan = types.SimpleNamespace(conversion=lambda *a: None)
        self.sent: list[tuple[str, str, StoredTensor]] = []
        self.to_enclave: list[tuple[str, StoredTensor, dict[str, str]]] = []

    @property
    def principal(self) -> str:
        return POLICY.principal(self.party, self.zone)

    def send(self, sid: str, name: str, t: StoredTensor, to_zone: str, party: str) -> None:
        self.sent.append((to_zone, party, t))

    def call_enclave(self, tee: str, method: str, sid: str, name: str, t: StoredTensor, meta: dict[str, str]) -> Any:
        self.to_enclave.append((method, t, meta))
        return types.SimpleNamespace(bytes=0, to_principal="owner/he")


def _ring_uniform(t: StoredTensor) -> bool:
    ring = ring_of(t).astype(np.float64)
    return BOUNDED not in t.meta and np.abs(ring).max() > 2.0**60 and abs(float((ring < 0).mean()) - 0.5) < 0.05


def test_he_to_mpc_the_hosts_party_gets_a_ring_uniform_share_and_only_the_enclave_the_seed() -> None:
    x = np.random.default_rng(1).normal(size=(8, 384)) * 3
    out = _Outbox("he", "owner", _Masking(x))
    mask_into_shares(out, zone_pb2.TransferRequest(session="s", name="t", to_zone="mpc"),  # type: ignore[arg-type]
                     StoredTensor(pb.CKKS, "ckks", x.shape, b"", {}))
    (to_zone, party, host_share), = out.sent
    assert (to_zone, party) == ("mpc", "owner") and _ring_uniform(host_share)
    (method, masked, meta), = out.to_enclave
    assert method == "DecryptToShare" and meta["to_party"] == "keyholder" and MASK_SEED not in host_share.meta
    # what the enclave then does (zones/tee/convert.decrypt_to_share, without CKKS): x - r, less u
    u = ring_mask(bytes.fromhex(meta[MASK_SEED]), x.shape)
    inside = np.frombuffer(masked.data, dtype=np.float64).reshape(x.shape)
    keyholder_share = hide(bounded_share(inside, 1, 2, 16), u, -1)
    assert _ring_uniform(keyholder_share)
    got = combine("t", [host_share, keyholder_share]).double().numpy()
    assert np.abs(got - x).max() < 1e-4


def test_mpc_to_he_every_party_sends_the_enclave_a_ring_uniform_share() -> None:
    y = torch.from_numpy(np.random.default_rng(2).normal(size=(8, 384)) * 3)
    shares = [StoredTensor(s.encoding, s.dtype, s.shape, s.data, s.meta | {TO_HE: "1"}) for s in split(y, 2, 16)]
    move = zone_pb2.TransferRequest(session="s", name="t", to_zone="he")
    owner, keyholder = _Outbox("mpc", "owner"), _Outbox("mpc", "keyholder")
    reencrypt(owner, move, shares[0])  # type: ignore[arg-type]
    reencrypt(keyholder, move, shares[1])  # type: ignore[arg-type]
    (to_zone, party, mask), = owner.sent  # the HE host's own mask s, to its HE zone: independent of y
    assert (to_zone, party, mask.meta[PIECES], mask.meta[BOUNDED]) == ("he", "owner", "2", "1")
    assert keyholder.sent == []
    pieces = [owner.to_enclave[0], keyholder.to_enclave[0]]
    assert all(method == "EncryptShare" and _ring_uniform(t) for method, t, _ in pieces)
    # inside the enclave (zones/tee/pieces.py): their sum is y - s, bounded; the HE zone adds s
    with np.errstate(over="ignore"):
        total = ring_of(pieces[0][1]) + ring_of(pieces[1][1])
    inside = bounded_values(StoredTensor(pb.SHARE, "int64", y.shape, total.tobytes(), {"precision": "16"}))
    assert np.abs(inside).max() < 2.0 ** (POLICY.zones["he"].reshare_mask_bits + 1)  # type: ignore[union-attr]
    assert np.abs(inside + bounded_values(mask) - y.numpy()).max() < 1e-4


def test_mpc_to_he_refuses_a_share_the_plan_does_not_send_there() -> None:
    share = split(torch.zeros(2, 4), 2, 16)[0]
    with pytest.raises(ZoneError) as e:
        reencrypt(_Outbox("mpc", "owner"), zone_pb2.TransferRequest(session="s", name="t", to_zone="he"),  # type: ignore[arg-type]
                  share)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
