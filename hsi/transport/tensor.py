"""A tensor as a zone holds and sends it: encoding, element type, shape, payload and encoding metadata."""

from __future__ import annotations

from dataclasses import dataclass, field

from protos import tensor_pb2 as pb


@dataclass(frozen=True)
class StoredTensor:
    """A tensor held by a zone: its encoding, element type, shape, payload and encoding metadata."""

    encoding: int  # pb.Encoding value
    dtype: str
    shape: tuple[int, ...]
    data: bytes
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def encoding_name(self) -> str:
        """`plain`, `ckks`, `share` or `sealed`."""
        return str(pb.Encoding.Name(self.encoding)).lower()  # type: ignore[arg-type,unused-ignore]
