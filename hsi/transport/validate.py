"""What every receiver checks of a tensor before it allocates, keeps or runs anything on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

from hsi.transport.codec import DTYPES, CodecError, element_count
from hsi.transport.status import StatusError
from hsi.transport.tensor import StoredTensor
from protos import tensor_pb2 as pb

SEAL_TAG_BYTES = 16  # AES-GCM's tag: a sealed tensor is its plaintext bytes and the tag
SEALED_BYTES = "bytes"  # the dtype of sealed material that is no tensor (a key bundle): shape [payload bytes]
SHARE_DTYPE = "int64"  # ring elements of Z_2^64
CKKS_DTYPE = "ckks"
ENCODINGS: dict[int, str] = {pb.PLAIN: "plain", pb.CKKS: "ckks", pb.SHARE: "share", pb.SEALED: "sealed"}


class TensorInvalid(StatusError):
    """A tensor whose header contradicts itself or its payload: refused with INVALID_ARGUMENT, naming the field."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, f"tensor {name!r}: {message}")


def check_header(h: pb.TensorHeader) -> None:
    """Check a stream's header before its body is read: the payload it declares (`total_bytes`) must be what
    its encoding, dtype and shape take. TensorInvalid otherwise."""
    check(h.name, int(h.encoding), h.dtype, list(h.shape), h.total_bytes, h.meta)


def validate(name: str, t: StoredTensor) -> None:
    """Check a received tensor as `check_header` does, against the bytes it holds."""
    check(name, t.encoding, t.dtype, list(t.shape), len(t.data), t.meta)


def check(name: str, encoding: int, dtype: str, shape: Sequence[int], nbytes: int, meta: Mapping[str, str]) -> None:
    """The checks every receiver makes, each naming the field it refuses:

    - `encoding` is plain, ckks, share or sealed;
    - `dtype` is one the codec knows (plain), int64 (share), `ckks` (ckks), a codec dtype or `bytes` (sealed);
    - `shape` has at most 32 dimensions, none negative, at most 2^48 elements (counted without overflow);
    - the payload is exactly what the shape takes: elements x item size (plain, share), that plus the AES-GCM
      tag (sealed), the shape's one dimension (sealed `bytes`), the sum of the ciphertext `lengths` in `meta`,
      one per cell of its `grid`, over a (tokens, features) shape (ckks; the zone that reads ciphertexts checks
      their packing, context and key on top).
    """
    kind = ENCODINGS.get(encoding)
    if kind is None:
        raise TensorInvalid(name, f"encoding {encoding} is not one of {', '.join(ENCODINGS.values())}")
    try:
        count = element_count(shape)
    except CodecError as e:
        raise TensorInvalid(name, f"bad shape: {e}") from None
    if kind == "ckks":
        _check_ckks(name, dtype, shape, nbytes, meta)
        return
    if kind == "sealed" and dtype == SEALED_BYTES:
        if len(shape) != 1 or shape[0] != nbytes:
            raise TensorInvalid(name, f"sealed bytes of shape {list(shape)} do not describe a payload of {nbytes} "
                                      "bytes")
        return
    allowed = [SHARE_DTYPE] if kind == "share" else list(DTYPES)
    if dtype not in allowed:
        raise TensorInvalid(name, f"dtype {dtype!r} is not one a {kind} tensor takes ({', '.join(allowed)})")
    want = count * DTYPES[dtype].itemsize + (SEAL_TAG_BYTES if kind == "sealed" else 0)
    if nbytes != want:
        raise TensorInvalid(name, f"a {kind} {dtype} tensor of shape {list(shape)} takes {want} bytes; the payload "
                                  f"has {nbytes}")


def _check_ckks(name: str, dtype: str, shape: Sequence[int], nbytes: int, meta: Mapping[str, str]) -> None:
    if dtype != CKKS_DTYPE:
        raise TensorInvalid(name, f"dtype {dtype!r} is not one a ckks tensor takes ({CKKS_DTYPE})")
    if len(shape) != 2 or min(shape) < 1:
        raise TensorInvalid(name, f"a ckks tensor's shape is (tokens, features), each at least 1; got {list(shape)}")
    try:
        blocks, chunks = (int(v) for v in meta["grid"].split(","))
        lengths = [int(v) for v in meta["lengths"].split(",")]
    except (KeyError, ValueError):
        raise TensorInvalid(name, "ckks meta needs a grid 'blocks,chunks' and the ciphertexts' byte lengths "
                                  "'n,n,...'") from None
    if blocks < 1 or chunks < 1 or blocks * chunks != len(lengths):
        raise TensorInvalid(name, f"ckks grid {blocks}x{chunks} does not match {len(lengths)} ciphertext lengths")
    if min(lengths) < 1 or sum(lengths) != nbytes:
        raise TensorInvalid(name, f"ckks ciphertext lengths total {sum(lengths)} bytes (each at least 1); the "
                                  f"payload has {nbytes}")
