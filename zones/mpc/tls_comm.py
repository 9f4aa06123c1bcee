"""CrypTen's communicator over the session's mutual-TLS mesh (`links`), in place of torch.distributed and gloo.

The same collectives as CrypTen's `DistributedCommunicator` (so the same rounds and bytes in its statistics),
over global ranks: the compute parties are 0..n-1, the dealer n. A group is the tuple of its ranks. Objects
are pickled as CrypTen pickles them and unpickled with its restricted loader.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import torch
from crypten.common import serial
from crypten.communicator.communicator import Communicator, _logging
from torch.distributed import ReduceOp

from zones.mpc import links, rendezvous

MAX_OBJECT_BYTES = 1 << 20  # a dealer request or a size: never more
_prepared: links.MeshSpec | None = None
_announce: rendezvous.Announce | None = None


def prepare(spec: links.MeshSpec, announce: rendezvous.Announce | None = None) -> None:
    """The mesh `crypten.init()` will join in this process (before it), and how rank 0 announces its port (to its
    zone's hub; without, it runs a hub of its own)."""
    global _prepared, _announce
    _prepared, _announce = spec, announce


def _bytes(tensor: torch.Tensor) -> memoryview:
    view: memoryview = tensor.detach().contiguous().numpy().data.cast("B")
    return view


def _combine(op: Any, acc: torch.Tensor, other: torch.Tensor) -> None:
    if op == ReduceOp.SUM:
        acc.add_(other)  # wraps around the ring, as the shares do
    elif op == ReduceOp.BXOR:
        acc.bitwise_xor_(other)
    else:
        raise ValueError(f"reduction {op} is not one hsi's MPC protocols use")


class _Request:
    """What `isend` / `irecv` return: `wait()` completes the transfer."""

    def __init__(self, wait: Any) -> None:
        self._wait = wait

    def wait(self) -> None:
        """Block until the transfer is done."""
        self._wait()

    def is_completed(self) -> bool:
        """Whether `wait` would return at once (it runs the transfer)."""
        self._wait()
        self._wait = lambda: None
        return True


class TlsCommunicator(Communicator):
    """CrypTen's communicator for one session, every byte on the mTLS mesh."""

    BYTES_PER_ELEMENT = 8
    instance: TlsCommunicator | None = None

    def __init__(self, mesh: links.Mesh, world_size: int, ttp: bool) -> None:
        self.mesh = mesh
        self.world_size = world_size
        self.rank = mesh.rank
        self.ttp_initialized = ttp
        self.main_group = tuple(range(world_size))
        self.ttp_group = tuple(range(world_size + (1 if ttp else 0)))
        self.ttp_comm_group = (0, world_size) if ttp else (0,)
        self._name = f"rank{self.rank}"
        self.reset_communication_stats()

    @classmethod
    def is_initialized(cls) -> bool:
        """Whether this process has joined a session's mesh."""
        return cls.instance is not None

    @classmethod
    def initialize(cls, rank: int, world_size: int, init_ttp: bool = False) -> None:
        """Join the mesh `prepare` set; called by `crypten.init()` (its rank and world size come from the mesh)."""
        if _prepared is None:
            raise RuntimeError("no MPC mesh prepared in this process: call zones.mpc.tls_comm.prepare first")
        parties = len(_prepared.principals) - (1 if init_ttp else 0)
        cls.instance = TlsCommunicator(rendezvous.join(_prepared, _announce), parties, init_ttp)

    @classmethod
    def get(cls) -> TlsCommunicator | None:
        """This process's communicator."""
        return cls.instance

    @classmethod
    def shutdown(cls) -> None:
        """Tell the dealer to stop (rank 0), then close every link."""
        comm = cls.instance
        if comm is None:
            return
        try:
            if comm.rank == 0 and comm.ttp_initialized:
                comm.send_obj("terminate", comm.get_ttp_rank(), comm.ttp_group)
        finally:
            comm.mesh.close()
            cls.instance = None

    # -- point to point ----------------------------------------------------------------------------------------

    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        done = self.mesh.send(dst, _bytes(tensor))
        self.mesh.wait_sent(done, dst)

    def _recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        self.mesh.recv_into(src, _bytes(tensor))
        return tensor

    def raw_send(self, tensor: torch.Tensor, dst: int) -> None:
        """Send without counting a round (the dealer's replies, which CrypTen's statistics count at the parties)."""
        self._send(tensor.contiguous(), dst)

    def raw_recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Receive into `tensor` without counting a round."""
        return self._recv(tensor, src)

    @_logging
    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Send `tensor` to `dst`."""
        self._send(tensor.contiguous(), dst)

    @_logging
    def recv(self, tensor: torch.Tensor, src: int | None = None) -> torch.Tensor:
        """A tensor shaped like `tensor`, received from `src`."""
        if src is None:
            raise ValueError("hsi's MPC links receive from a named rank only")
        return self._recv(torch.empty_like(tensor), src)

    @_logging
    def isend(self, tensor: torch.Tensor, dst: int) -> _Request:
        """Start sending `tensor` to `dst`."""
        data = tensor.detach().contiguous().clone()
        done = self.mesh.send(dst, _bytes(data))
        return _Request(lambda: self.mesh.wait_sent(done, dst))

    @_logging
    def irecv(self, tensor: torch.Tensor, src: int | None = None) -> _Request:
        """Receive into `tensor` from `src` when waited on."""
        if src is None:
            raise ValueError("hsi's MPC links receive from a named rank only")
        return _Request(lambda: self._recv(tensor, src))

    # -- collectives -------------------------------------------------------------------------------------------

    def _others(self, group: Sequence[int] | None = None) -> list[int]:
        return [r for r in (self.main_group if group is None else group) if r != self.rank]

    def _exchange(self, tensor: torch.Tensor, peers: list[int]) -> list[torch.Tensor]:
        """Send `tensor` to every peer and receive one like it from each (sends overlap the receives)."""
        data = tensor.detach().contiguous()
        sent = [(self.mesh.send(p, _bytes(data)), p) for p in peers]
        got = [self._recv(torch.empty_like(data), p) for p in peers]
        for done, p in sent:
            self.mesh.wait_sent(done, p)
        return got

    @_logging
    def scatter(self, scatter_list: list[torch.Tensor], src: int, size: Any = None, device: Any = None) -> torch.Tensor:
        """This party's tensor of `scatter_list` as held by `src`."""
        if src == self.rank:
            for r in self._others():
                self._send(scatter_list[r].contiguous(), r)
            return scatter_list[self.rank]
        shape = size if size is not None else scatter_list[self.rank].size()
        return self._recv(torch.empty(shape, dtype=torch.long), src)

    @_logging
    def reduce(self, input: Any, dst: int, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:
        """The reduction of every party's `input` at `dst` (None elsewhere)."""
        tensors = list(input) if batched else [input]
        flat = torch.cat([t.reshape(-1) for t in tensors])
        if self.rank != dst:
            self._send(flat, dst)
            return None
        acc = flat.clone()
        for r in self._others():
            _combine(op, acc, self._recv(torch.empty_like(flat), r))
        parts = [p.view(t.size()) for p, t in zip(acc.split([t.numel() for t in tensors]), tensors, strict=True)]
        return parts if batched else parts[0]

    @_logging
    def all_reduce(self, input: Any, op: Any = ReduceOp.SUM, batched: bool = False) -> Any:
        """The reduction of every party's `input`, at every party."""
        tensors = list(input) if batched else [input]
        flat = torch.cat([t.reshape(-1) for t in tensors])
        acc = flat.clone()
        for other in self._exchange(flat, self._others()):
            _combine(op, acc, other)
        parts = [p.view(t.size()) for p, t in zip(acc.split([t.numel() for t in tensors]), tensors, strict=True)]
        return parts if batched else parts[0]

    @_logging
    def gather(self, tensor: torch.Tensor, dst: int) -> list[Any]:
        """Every party's `tensor` at `dst`, in rank order ([None] elsewhere)."""
        if self.rank != dst:
            self._send(tensor.contiguous(), dst)
            return [None]
        return [tensor if r == self.rank else self._recv(torch.empty_like(tensor), r) for r in self.main_group]

    @_logging
    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every party's `tensor`, in rank order."""
        others = self._others()
        got = dict(zip(others, self._exchange(tensor, others), strict=True))
        return [tensor if r == self.rank else got[r] for r in self.main_group]

    @_logging
    def broadcast(self, input: Any, src: int, group: Sequence[int] | None = None,
                  batched: bool = False) -> Any:
        """`src`'s `input`, written into every other member's `input`."""
        tensors = list(input) if batched else [input]
        for t in tensors:
            if self.rank == src:
                for r in self._others(group):
                    self._send(t.contiguous(), r)
            else:
                received = self._recv(torch.empty_like(t), src)
                t.copy_(received)
        return input

    @_logging
    def barrier(self) -> None:
        """Wait until every compute party got here."""
        self._exchange(torch.zeros(1, dtype=torch.long), self._others())

    @_logging
    def send_obj(self, obj: Any, dst: int, group: Any = None) -> None:
        """Send a picklable object to `dst`."""
        done = self.mesh.send(dst, pickle.dumps(obj))
        self.mesh.wait_sent(done, dst)

    @_logging
    def recv_obj(self, src: int, group: Any = None) -> Any:
        """An object from `src`, unpickled by CrypTen's restricted loader."""
        return serial.restricted_loads(self.mesh.recv_bytes(src, MAX_OBJECT_BYTES))

    @_logging
    def broadcast_obj(self, obj: Any, src: int, group: Sequence[int] | None = None) -> Any:
        """`src`'s object, at every member."""
        if self.rank == src:
            data = pickle.dumps(obj)
            for r in self._others(group):
                self.mesh.wait_sent(self.mesh.send(r, data), r)
            return obj
        return serial.restricted_loads(self.mesh.recv_bytes(src, MAX_OBJECT_BYTES))

    def traffic(self) -> dict[str, int]:
        """This process's traffic since the mesh opened: `rounds`, the frames it waited for from the other compute
        parties (the protocol's round trips on its critical path), `bytes` it sent them; `dealer_rounds` and
        `dealer_bytes`, the frames and bytes it exchanged with the dealer (both ways)."""
        out = {"rounds": 0, "bytes": 0, "dealer_rounds": 0, "dealer_bytes": 0}
        for peer, (frames_in, bytes_in, _, bytes_out) in self.mesh.counts.items():
            if peer in self.main_group:
                out["rounds"] += frames_in
                out["bytes"] += bytes_out
            else:
                out["dealer_rounds"] += frames_in
                out["dealer_bytes"] += bytes_in + bytes_out
        return out

    # -- who is who --------------------------------------------------------------------------------------------

    def get_world_size(self) -> int:
        """The number of compute parties."""
        return self.world_size

    def get_rank(self) -> int:
        """This process's rank."""
        return self.rank

    def get_ttp_rank(self) -> int:
        """The dealer's rank."""
        return self.world_size

    def set_name(self, name: str) -> None:
        """Name this party (CrypTen's logs)."""
        self._name = name

    def get_name(self) -> str:
        """This party's name."""
        return self._name

    def get_distributed_backend(self) -> str:
        """The transport's name."""
        return "mtls"


def install(crypten: Any) -> None:
    """Make `crypten.init()` use this communicator (the name CrypTen's `communicator` functions look up)."""
    crypten.communicator.DistributedCommunicator = TlsCommunicator
