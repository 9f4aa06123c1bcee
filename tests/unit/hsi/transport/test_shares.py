"""Additive shares: they reconstruct, each alone is noise, bad sharings are refused."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch

from hsi.transport.codec import decode_tensor
from hsi.transport.shares import ShareAssembler, combine, ring_of, split
from hsi.transport.status import ZoneError


def test_shares_reconstruct_and_each_share_alone_is_noise() -> None:
    x = torch.linspace(-300, 300, 4 * 96).reshape(4, 96)
    shares = split(x, 3, 16)
    assert [s.meta["share_index"] for s in shares] == ["0", "1", "2"]
    assert float((combine("x", shares) - x).abs().max()) <= 2**-16
    for s in shares:  # every share spans the ring, nothing like the scaled values
        ring = ring_of(s)
        assert np.abs(ring).max() > 2**60
        assert not np.allclose(ring.astype(np.float64), x.numpy() * 2**16, atol=2**20)


def test_integer_shares_come_back_as_int64() -> None:
    got = combine("ids", split(torch.tensor([57.0, 49151.0]), 2, 16, integer=True))
    assert got.dtype == torch.int64 and got.tolist() == [57, 49151]


def test_values_outside_fixed_point_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit 16-bit fixed point"):
        split(torch.tensor([1e15]), 2, 16)
    with pytest.raises(ValueError, match="do not fit"):
        split(torch.tensor([float("nan")]), 2, 16)


def test_incomplete_or_mixed_sharings_are_refused() -> None:
    a, _ = split(torch.ones(3), 2, 16)
    _, other = split(torch.ones(3), 2, 12)
    with pytest.raises(ZoneError, match="do not form one sharing"):
        combine("x", [a, a])
    with pytest.raises(ZoneError, match="do not form one sharing"):
        combine("x", [a, other])
    with pytest.raises(ZoneError, match="do not form one sharing"):
        combine("x", [a])


def test_assembler_keeps_shares_until_the_last_arrives() -> None:
    x = torch.randn(2, 5)
    a, b = split(x, 2, 16)
    asm = ShareAssembler()
    assert asm.add("h", b) is None
    with pytest.raises(ZoneError) as e:
        asm.add("h", b)
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS
    whole = asm.add("h", a)
    assert whole is not None and whole.encoding_name == "plain"
    got = decode_tensor(whole.dtype, list(whole.shape), whole.data)
    assert float((got - x).abs().max()) <= 2**-15
