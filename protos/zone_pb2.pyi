from protos import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyRequirementsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyRequirementsReply(_message.Message):
    __slots__ = ("key", "rotations", "params_json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ROTATIONS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    key: str
    rotations: _containers.RepeatedScalarFieldContainer[int]
    params_json: str
    def __init__(self, key: _Optional[str] = ..., rotations: _Optional[_Iterable[int]] = ..., params_json: _Optional[str] = ...) -> None: ...

class InstallPublicMaterialReply(_message.Message):
    __slots__ = ("key", "key_tag", "rotations")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_TAG_FIELD_NUMBER: _ClassVar[int]
    ROTATIONS_FIELD_NUMBER: _ClassVar[int]
    key: str
    key_tag: str
    rotations: int
    def __init__(self, key: _Optional[str] = ..., key_tag: _Optional[str] = ..., rotations: _Optional[int] = ...) -> None: ...

class LoadStageRequest(_message.Message):
    __slots__ = ("plan_digest", "stage")
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    plan_digest: str
    stage: int
    def __init__(self, plan_digest: _Optional[str] = ..., stage: _Optional[int] = ...) -> None: ...

class LoadStageReply(_message.Message):
    __slots__ = ("ops", "seconds")
    OPS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ops: _containers.RepeatedScalarFieldContainer[str]
    seconds: float
    def __init__(self, ops: _Optional[_Iterable[str]] = ..., seconds: _Optional[float] = ...) -> None: ...

class PushTensorReply(_message.Message):
    __slots__ = ("name", "bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    bytes: int
    def __init__(self, name: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class PullTensorRequest(_message.Message):
    __slots__ = ("session", "name")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    session: str
    name: str
    def __init__(self, session: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RunStageRequest(_message.Message):
    __slots__ = ("session", "plan_digest", "stage", "position_offset", "release", "then", "lengths")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    POSITION_OFFSET_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    THEN_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    session: str
    plan_digest: str
    stage: int
    position_offset: int
    release: _containers.RepeatedScalarFieldContainer[str]
    then: _containers.RepeatedCompositeFieldContainer[TransferRequest]
    lengths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, session: _Optional[str] = ..., plan_digest: _Optional[str] = ..., stage: _Optional[int] = ..., position_offset: _Optional[int] = ..., release: _Optional[_Iterable[str]] = ..., then: _Optional[_Iterable[_Union[TransferRequest, _Mapping]]] = ..., lengths: _Optional[_Iterable[int]] = ...) -> None: ...

class RunStageReply(_message.Message):
    __slots__ = ("outputs", "seconds", "mpc_rounds", "mpc_bytes", "held_bytes", "transfers", "party_rounds", "party_bytes", "dealer_rounds", "dealer_bytes")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MPC_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MPC_BYTES_FIELD_NUMBER: _ClassVar[int]
    HELD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    PARTY_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    PARTY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEALER_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    DEALER_BYTES_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    seconds: float
    mpc_rounds: int
    mpc_bytes: int
    held_bytes: int
    transfers: _containers.RepeatedCompositeFieldContainer[TransferReply]
    party_rounds: int
    party_bytes: int
    dealer_rounds: int
    dealer_bytes: int
    def __init__(self, outputs: _Optional[_Iterable[str]] = ..., seconds: _Optional[float] = ..., mpc_rounds: _Optional[int] = ..., mpc_bytes: _Optional[int] = ..., held_bytes: _Optional[int] = ..., transfers: _Optional[_Iterable[_Union[TransferReply, _Mapping]]] = ..., party_rounds: _Optional[int] = ..., party_bytes: _Optional[int] = ..., dealer_rounds: _Optional[int] = ..., dealer_bytes: _Optional[int] = ...) -> None: ...

class TransferRequest(_message.Message):
    __slots__ = ("session", "name", "to_zone", "to_party", "release")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_ZONE_FIELD_NUMBER: _ClassVar[int]
    TO_PARTY_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    session: str
    name: str
    to_zone: str
    to_party: str
    release: bool
    def __init__(self, session: _Optional[str] = ..., name: _Optional[str] = ..., to_zone: _Optional[str] = ..., to_party: _Optional[str] = ..., release: _Optional[bool] = ...) -> None: ...

class TransferReply(_message.Message):
    __slots__ = ("bytes", "seconds", "bytes_by_link")
    class BytesByLinkEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_BY_LINK_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    seconds: float
    bytes_by_link: _containers.ScalarMap[str, int]
    def __init__(self, bytes: _Optional[int] = ..., seconds: _Optional[float] = ..., bytes_by_link: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RecordsRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("session", "name", "encoding", "source_party", "source_principal", "zone", "party", "bytes")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PARTY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    PARTY_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    session: str
    name: str
    encoding: _tensor_pb2.Encoding
    source_party: str
    source_principal: str
    zone: str
    party: str
    bytes: int
    def __init__(self, session: _Optional[str] = ..., name: _Optional[str] = ..., encoding: _Optional[_Union[_tensor_pb2.Encoding, str]] = ..., source_party: _Optional[str] = ..., source_principal: _Optional[str] = ..., zone: _Optional[str] = ..., party: _Optional[str] = ..., bytes: _Optional[int] = ...) -> None: ...

class RecordsReply(_message.Message):
    __slots__ = ("receipts",)
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    receipts: _containers.RepeatedCompositeFieldContainer[Receipt]
    def __init__(self, receipts: _Optional[_Iterable[_Union[Receipt, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class ReleaseReply(_message.Message):
    __slots__ = ("freed_tensors",)
    FREED_TENSORS_FIELD_NUMBER: _ClassVar[int]
    freed_tensors: int
    def __init__(self, freed_tensors: _Optional[int] = ...) -> None: ...
