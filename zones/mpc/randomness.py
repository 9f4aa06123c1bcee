"""CrypTen's randomness replaced by the cryptographic PRG (`zones.mpc.prg`), its torch generators made unreachable.

CrypTen 0.4.1 draws every mask, triple and zero-sharing with `torch.randint` from `torch.Generator`s (Mersenne
Twister: its state, hence every future draw, follows from 624 outputs). `install` (called by
`compat.import_crypten`, before any `crypten.init()`) re-points the places CrypTen draws or seeds:

- `crypten._setup_prng` (run by `crypten.init()` at each compute party): pairwise seeds from os.urandom, each
  party sending its "next" seed to its next neighbour, as CrypTen's `_sync_seeds` does; they key the "prev" and
  "next" `Prg`s of the pseudo-random zero sharings (`zero_sharing`, CrypTen's `ArithmeticSharedTensor.PRZS` and
  `BinarySharedTensor.PRZS`). CrypTen's "global" stream (only its training dropout uses it) is not set up.
- `TTPClient`'s `_setup_generators` / `get_generator` and `TTPServer`'s `_setup_generators` /
  `_get_generators` / `wraps`: the dealer draws one seed per party from os.urandom and sends it over the same
  link as CrypTen does; both sides key a `Prg` with it, from which every triple, binary triple, square, wrap,
  B2A and weight mask is drawn (CrypTen's provider functions and this project's `triples` and `fixed_weights`).
- `crypten.common.rng.generate_random_ring_element` / `generate_kbit_random_tensor`, in every CrypTen module
  that imported them: they draw from the `Prg` they are given (or this process's own, seeded from os.urandom,
  for `generator=None`) and refuse anything else, a `torch.Generator` included.

Where CrypTen kept a `torch.Generator` (`crypten.generators[...][device]`, `TTPClient.generator`,
`TTPServer.generators`) there is now an `Unreachable`: any use raises `GeneratorDisabled` and is recorded
(`touches`), so a CrypTen path this module missed fails loudly instead of drawing predictable values.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import torch

from zones.mpc.prg import SEED_BYTES, Prg, Size, fresh_seed

_SEED_WORDS = SEED_BYTES // 8  # a seed travels as int64 words, over the link CrypTen sends its seeds on
_touches: list[str] = []
_pairwise: dict[str, tuple[int, Prg]] = {}
_local: tuple[int, Prg] | None = None
_installed = False


class GeneratorDisabled(Exception):
    """A CrypTen torch generator was used. Deliberately not a RuntimeError: CrypTen takes those for
    out-of-memory in places and retries another way."""


class NotSeeded(Exception):
    """A pairwise stream was asked for before `crypten.init()` seeded it in this process."""


class Unreachable:
    """Stands where CrypTen kept a `torch.Generator`: any attribute read or write raises and is recorded."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def refuse(self, what: str) -> NoReturn:
        """Record the use `what` of this generator and raise."""
        _touches.append(f"{self._name}: {what}")
        raise GeneratorDisabled(
            f"{self._name} is disabled: hsi draws every MPC mask, triple and zero-sharing from zones.mpc.prg "
            f"(AES-256-CTR, seeds from os.urandom), never from a torch.Generator; a CrypTen path used it ({what})")

    def __getattr__(self, name: str) -> Any:
        self.refuse(f"read .{name}")

    def __setattr__(self, name: str, value: Any) -> None:
        self.refuse(f"set .{name}")

    def __repr__(self) -> str:
        return f"<disabled {self._name}>"


class _UnreachableDevices(dict[Any, "Unreachable"]):
    """One entry of `crypten.generators` (device -> generator): an `Unreachable` for every device."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def __missing__(self, device: Any) -> Unreachable:
        self[device] = Unreachable(f"crypten.generators[{self.key!r}][{device}]")
        return self[device]


def touches() -> list[str]:
    """Every use of a disabled CrypTen generator in this process so far (each also raised)."""
    return list(_touches)


def local() -> Prg:
    """This process's private stream (CrypTen's "local" generator), seeded from os.urandom on first use in each
    process: a forked worker never shares its parent's."""
    global _local
    if _local is None or _local[0] != os.getpid():
        _local = (os.getpid(), Prg(fresh_seed()))
    return _local[1]


def pairwise(which: str) -> Prg:
    """The stream this compute party shares with its previous ("prev") or next ("next") neighbour."""
    held = _pairwise.get(which)
    if held is None or held[0] != os.getpid():
        raise NotSeeded(f"no {which!r} stream in this process: crypten.init() seeds it")
    return held[1]


def zero_sharing(size: Size) -> torch.Tensor:
    """This party's part of a pseudo-random arithmetic sharing of zero: the stream shared with the previous party
    minus the one shared with the next (the parts of all parties sum to zero in the ring)."""
    return pairwise("prev").ring(size) - pairwise("next").ring(size)


def dealer_stream(device: Any = None) -> Prg:
    """The stream this compute party shares with the dealer (CrypTen's TTP client generator)."""
    from crypten.mpc.provider.ttp_provider import TTPClient

    _on_cpu(device)
    stream: Prg = TTPClient.get().prg
    return stream


def _on_cpu(device: Any) -> None:
    if device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"hsi's MPC randomness lives on the CPU, not {device}")


def _prg_of(generator: Any) -> Prg:
    if generator is None:
        return local()
    if isinstance(generator, Prg):
        return generator
    if isinstance(generator, Unreachable):
        generator.refuse("drawn from")
    raise TypeError(f"refusing to draw MPC randomness from a {type(generator).__name__}: hsi draws it from "
                    "zones.mpc.prg.Prg")


def _words(seed: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(seed), dtype=torch.int64)


def _seed(words: torch.Tensor) -> bytes:
    return bytes(words.numpy().tobytes())


# -- CrypTen's draw points --------------------------------------------------------------------------------------

def generate_random_ring_element(size: Size, ring_size: int = 2**64, generator: Any = None,
                                 device: Any = None) -> torch.Tensor:
    """CrypTen's `rng.generate_random_ring_element`: uniform over the whole ring, from a `Prg`."""
    if ring_size != 2**64:
        raise ValueError(f"hsi draws ring elements of the 2^64 ring only, not of {ring_size}")
    _on_cpu(device)
    return _prg_of(generator).ring(size)


def generate_kbit_random_tensor(size: Size, bitlength: int | None = None, generator: Any = None,
                                device: Any = None) -> torch.Tensor:
    """CrypTen's `rng.generate_kbit_random_tensor`: uniform in [0, 2^bitlength), from a `Prg`."""
    _on_cpu(device)
    return _prg_of(generator).bits(size, 64 if bitlength is None else bitlength)


def _przs_shape(size: tuple[Any, ...]) -> Any:
    # CrypTen calls PRZS(size) with a torch.Size, or PRZS(*dims)
    return size[0] if len(size) == 1 and not isinstance(size[0], int) else size


def arithmetic_przs(*size: Any, device: Any = None) -> Any:
    """CrypTen's `ArithmeticSharedTensor.PRZS`, from the pairwise `Prg`s."""
    from crypten.mpc.primitives.arithmetic import SENTINEL, ArithmeticSharedTensor

    _on_cpu(device)
    tensor = ArithmeticSharedTensor(src=SENTINEL)
    tensor.share = zero_sharing(_przs_shape(size))
    return tensor


def binary_przs(*size: Any, device: Any = None) -> Any:
    """CrypTen's `BinarySharedTensor.PRZS` (a zero sharing under XOR), from the pairwise `Prg`s."""
    from crypten.mpc.primitives.arithmetic import SENTINEL
    from crypten.mpc.primitives.binary import BinarySharedTensor

    _on_cpu(device)
    shape = _przs_shape(size)
    tensor = BinarySharedTensor(src=SENTINEL)
    tensor.share = pairwise("prev").ring(shape) ^ pairwise("next").ring(shape)
    return tensor


def _disable_generators(crypten: Any) -> None:
    for key in list(crypten.generators):
        crypten.generators[key] = _UnreachableDevices(key)


def _setup_prng() -> None:
    """CrypTen's `_setup_prng` at a compute party: pairwise seeds from os.urandom, sent to the next party."""
    crypten = sys.modules["crypten"]
    comm = crypten.communicator.get()
    _disable_generators(crypten)
    next_seed = fresh_seed()
    world_size, rank = comm.get_world_size(), comm.get_rank()
    prev_seed = next_seed
    if world_size >= 2:
        received = torch.empty(_SEED_WORDS, dtype=torch.int64)
        sending = comm.isend(_words(next_seed), (rank + 1) % world_size)
        receiving = comm.irecv(received, src=(rank - 1) % world_size)
        sending.wait()
        receiving.wait()
        prev_seed = _seed(received)
    pid = os.getpid()
    _pairwise.update(prev=(pid, Prg(prev_seed)), next=(pid, Prg(next_seed)))


def _client_setup_generators(self: Any) -> None:
    """`TTPClient`'s set-up: the seed this party shares with the dealer (received as CrypTen receives its)."""
    from crypten import communicator

    comm = communicator.get()
    words = comm.raw_recv(torch.empty(_SEED_WORDS, dtype=torch.int64), comm.get_ttp_rank())
    self.prg = Prg(_seed(words))
    self.generator = Unreachable("TTPClient.generator")
    self.generator_cuda = Unreachable("TTPClient.generator_cuda")


def _client_get_generator(self: Any, device: Any = None) -> Prg:
    _on_cpu(device)
    stream: Prg = self.prg
    return stream


def _server_setup_generators(self: Any) -> None:
    """`TTPServer`'s set-up: one os.urandom seed per compute party, sent to it (as CrypTen sends its)."""
    from crypten import communicator

    comm = communicator.get()
    parties = comm.get_world_size()
    seeds = [fresh_seed() for _ in range(parties)]
    for i, seed in enumerate(seeds):
        comm.raw_send(_words(seed), i)
    self.prgs = [Prg(s) for s in seeds]
    self.generators = [Unreachable(f"TTPServer.generators[{i}]") for i in range(parties)]
    self.generators_cuda = [Unreachable(f"TTPServer.generators_cuda[{i}]") for i in range(parties)]


def _server_get_generators(self: Any, device: Any = None) -> list[Prg]:
    _on_cpu(device)
    streams: list[Prg] = self.prgs
    return streams


def _server_wraps(self: Any, size: Size) -> torch.Tensor:
    """`TTPServer.wraps` (CrypTen's reads its generators list directly)."""
    from crypten.common.util import count_wraps

    r = [g.ring(size) for g in self._get_generators(device=self.device)]
    wraps: torch.Tensor = count_wraps(r) - self._get_additive_PRSS(size, remove_rank=True)
    return wraps


def install(crypten: Any) -> None:
    """Re-point CrypTen's draw points at the cryptographic PRG and disable its torch generators (idempotent;
    before `crypten.init()`)."""
    global _installed
    if _installed:
        return
    from crypten.common import rng
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.binary import BinarySharedTensor
    from crypten.mpc.provider import ttp_provider

    replaced = [(rng.generate_random_ring_element, generate_random_ring_element),
                (rng.generate_kbit_random_tensor, generate_kbit_random_tensor)]
    for name, module in list(sys.modules.items()):  # every module that imported them by name
        if name == "crypten" or name.startswith("crypten."):
            for attr, value in list(vars(module).items()):
                for original, ours in replaced:
                    if value is original:
                        setattr(module, attr, ours)
    ArithmeticSharedTensor.PRZS = staticmethod(arithmetic_przs)
    BinarySharedTensor.PRZS = staticmethod(binary_przs)
    crypten._setup_prng = _setup_prng
    client = ttp_provider.TTPClient._TTPClient__TTPClient
    client._setup_generators = _client_setup_generators
    client.get_generator = _client_get_generator
    server = ttp_provider.TTPServer
    server._setup_generators = _server_setup_generators
    server._get_generators = _server_get_generators
    server.wraps = _server_wraps
    _disable_generators(crypten)
    _installed = True
