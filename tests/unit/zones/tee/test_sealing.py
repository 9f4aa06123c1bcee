"""Tensors the enclave keeps in its host's store: sealed under an enclave-only key, bound to session and name."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
import torch

from hsi.transport.codec import encode_tensor
from hsi.transport.status import ZoneError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from zones.tee.sealing import TensorSeal


def test_sealed_tensor_opens_for_its_session_and_name_only() -> None:
    seal = TensorSeal()
    x = torch.randn(5, 384)
    t = seal.seal("s1", "encoder.layer.0.attention.self.softmax", x)
    assert t.encoding == pb.SEALED and t.shape == (5, 384)
    assert encode_tensor(x)[2] not in t.data and len(t.data) == 5 * 384 * 4 + 16  # ciphertext and GCM tag
    assert torch.equal(seal.open("s1", "encoder.layer.0.attention.self.softmax", t), x)
    for session, name in [("s2", "encoder.layer.0.attention.self.softmax"), ("s1", "encoder.layer.1.attention.self.softmax")]:
        with pytest.raises(ZoneError) as e:
            seal.open(session, name, t)
        assert e.value.code == grpc.StatusCode.DATA_LOSS and "does not open" in str(e.value)


def test_altered_foreign_or_unsealed_tensors_are_refused() -> None:
    seal = TensorSeal()
    t = seal.seal("s", "x", torch.arange(6, dtype=torch.float32).reshape(2, 3))
    flipped = replace(t, data=bytes([t.data[0] ^ 1]) + t.data[1:])
    reshaped = replace(t, shape=(3, 2))
    for bad in [flipped, reshaped]:
        with pytest.raises(ZoneError) as e:
            seal.open("s", "x", bad)
        assert e.value.code == grpc.StatusCode.DATA_LOSS
    with pytest.raises(ZoneError) as e:
        TensorSeal().open("s", "x", t)  # another enclave process
    assert e.value.code == grpc.StatusCode.DATA_LOSS
    dtype, shape, data = encode_tensor(torch.zeros(2))
    with pytest.raises(ZoneError) as e:
        seal.open("s", "x", StoredTensor(pb.PLAIN, dtype, tuple(shape), data))
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "not sealed" in str(e.value)
