"""Ciphertext tensors that do not deserialise are refused by name, without OpenFHE's message (it carries paths)."""

from __future__ import annotations

import pytest

from hsi.ckks.packing import Packing
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb
from zones.common.ckks.tensor import CiphertextError, from_stored

META = {**Packing(8192, 512).meta(), "grid": "1,1", "lengths": "1000", "level": "0", "key_tag": "k"}


@pytest.mark.parametrize("payload", [b"\0" * 1000, b"\xff" * 1000], ids=["zeros", "ff"])
def test_bytes_that_are_no_ciphertext_are_refused(payload: bytes) -> None:
    t = StoredTensor(pb.CKKS, "ckks", (5, 384), payload, META)
    with pytest.raises(CiphertextError) as e:
        from_stored(t, 16384, "k")
    assert str(e.value) == "ciphertext 0 does not deserialise"
