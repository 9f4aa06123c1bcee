"""Beaver multiplication (and binary AND, bit conversion) with the dealer's triple fetched while the parties
open their masked inputs.

CrypTen's Beaver protocol asks the dealer (its trusted third party) for c = a * b and waits for the answer
before the parties open x - a and y - b; the request does not depend on x or y, so here party 0 sends it
first, the opening runs while the dealer computes, and party 0 collects c afterwards. Measured on the 2-core
machine, the request and its answer took ~4 ms of a ~10 ms multiplication. The dealer's computation and the
values every party sees are CrypTen's own; three things change: the order, the answer (the result tensor alone,
one message, where CrypTen sends its size as a pickled object, then broadcasts it: three), and the opening
(x - a and y - b in one all-reduce, where CrypTen runs one per tensor). The other parties,
which draw their share of c from the seed they share with the dealer, learn its shape without computing
op(a, b) (CrypTen multiplies two random tensors for it). Every mask and share is drawn from the AES-CTR stream
this party shares with the dealer (`randomness.dealer_stream`), never from CrypTen's torch generators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from zones.mpc import randomness
from zones.mpc.compat import import_crypten
from zones.mpc.links import LinkError
from zones.mpc.prg import Prg

REPLY_TENSOR = "tensor"  # a request's "reply": the dealer sends the result alone, its shape known to both sides


def request(function: str, *args: Any, **kwargs: Any) -> None:
    """Party 0: send the dealer a request for `function(*args, **kwargs)`; collect the answer with `receive`."""
    crypten = import_crypten()
    from crypten.mpc.provider.ttp_provider import TTPClient

    comm = crypten.communicator.get()
    message = {"function": function, "device": None, "args": args, "kwargs": kwargs, "reply": REPLY_TENSOR}
    comm.send_obj(message, comm.get_ttp_rank(), TTPClient.get().ttp_group)


def receive(size: torch.Size) -> torch.Tensor:
    """Party 0: the dealer's answer to the request sent last (party 0's share of the result, of shape `size`)."""
    crypten = import_crypten()
    comm = crypten.communicator.get()
    result = comm.raw_recv(torch.empty(size, dtype=torch.long), comm.get_ttp_rank())
    if crypten.cfg.communicator.verbose:
        comm._log_communication(result.nelement())  # counted as CrypTen counts its own receives
    return result


def _result_size(op: str, size0: torch.Size, size1: torch.Size, *args: Any, **kwargs: Any) -> torch.Size:
    """The shape of op(a, b), from shapes alone (on PyTorch's meta device)."""
    a = torch.empty(size0, dtype=torch.long, device="meta")
    b = torch.empty(size1, dtype=torch.long, device="meta")
    return getattr(torch, op)(a, b, *args, **kwargs).size()


class OpeningFailed(Exception):
    """An opening between the parties failed (a peer died, or stalled past the collective timeout): the session is
    over. Deliberately not a RuntimeError: CrypTen's A2B conversion takes those for out-of-memory and retries with
    more communication, which here would also wait out the dealer's unanswered reply (measured: 80 s instead of
    34 s for a stalled peer under a 30 s timeout)."""


def reveal_or_end(reveal: Callable[[list[Any]], Any], masked: list[Any]) -> Any:
    """reveal(masked), a failure raised as OpeningFailed."""
    try:
        return reveal(masked)
    except (RuntimeError, LinkError) as e:
        raise OpeningFailed(str(e)) from e


def open_together(masked: list[Any], op: Any = None) -> list[torch.Tensor]:
    """The public values of several masked shared tensors, opened in one collective (CrypTen's reveal_batch
    runs one per tensor). `op` is the reduction: sum for arithmetic shares, XOR for binary ones."""
    import torch.distributed as dist

    comm = import_crypten().communicator.get()
    flat = torch.cat([m.share.reshape(-1) for m in masked])
    opened = reveal_or_end(lambda _: comm.all_reduce(flat, op=op or dist.ReduceOp.SUM), masked)
    return [part.view(m.share.size()) for part, m in zip(opened.split([m.share.numel() for m in masked]), masked,
                                                         strict=True)]


def all_same(digest: bytes) -> bool:
    """Whether every compute party holds `digest` (one all-gather)."""
    comm = import_crypten().communicator.get()
    mine = torch.from_numpy(np.frombuffer(digest, dtype="<i8").copy())
    return all(torch.equal(d, mine) for d in comm.all_gather(mine))


def dealt(function: str, args: tuple[Any, ...], kwargs: dict[str, Any], size: torch.Size,
          draw: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """This party's share (of shape `size`) of the dealer's `function(*args, **kwargs)`, to collect after the
    opening: party 0 sends the request now and receives the answer when the returned function is called; every
    other party draws its share now with `draw` (from the seed it shares with the dealer, in CrypTen's order)."""
    if import_crypten().communicator.get().get_rank() == 0:
        request(function, *args, **kwargs)
        return lambda: receive(size)
    share = draw()
    return lambda: share


def _stream(x: Any) -> Prg:
    """The stream this party shares with the dealer, for tensors on x's device."""
    return randomness.dealer_stream(x.device)


def beaver_protocol(op: str, x: Any, y: Any, *args: Any, **kwargs: Any) -> Any:
    """x op y for arithmetic shares x, y (CrypTen's Beaver protocol, dealer request overlapped)."""
    import_crypten()
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.beaver import IgnoreEncodings

    if x.device != y.device:
        raise ValueError(f"x lives on device {x.device} but y on device {y.device}")
    g = _stream(x)
    a, b = g.ring(x.size()), g.ring(y.size())
    size = _result_size(op, x.size(), y.size(), *args, **kwargs)
    c_share = dealt("additive", (x.size(), y.size(), op, *args), kwargs, size, lambda: g.ring(size))
    a = ArithmeticSharedTensor.from_shares(a, precision=0)
    b = ArithmeticSharedTensor.from_shares(b, precision=0)
    with IgnoreEncodings([a, b, x, y]):
        epsilon, delta = open_together([x - a, y - b])
    c = ArithmeticSharedTensor.from_shares(c_share(), precision=0)
    # z = c + (a * delta) + (epsilon * b) + epsilon * delta
    c._tensor += getattr(torch, op)(epsilon, b._tensor, *args, **kwargs)
    c._tensor += getattr(torch, op)(a._tensor, delta, *args, **kwargs)
    c += getattr(torch, op)(epsilon, delta, *args, **kwargs)
    return c


def binary_and(x: Any, y: Any) -> Any:
    """x & y for binary shares x, y (CrypTen's `beaver.AND`, dealer request overlapped): the rounds of every
    comparison's adder circuit."""
    import_crypten()
    from crypten.mpc.primitives.binary import BinarySharedTensor

    g = _stream(x)
    a, b = g.bits(x.size()), g.bits(y.size())
    size = torch.broadcast_shapes(x.size(), y.size())
    c_share = dealt("binary", (x.size(), y.size()), {}, size, lambda: g.bits(size))
    a, b = BinarySharedTensor.from_shares(a), BinarySharedTensor.from_shares(b)
    epsilon, delta = open_together([x ^ a, y ^ b], torch.distributed.ReduceOp.BXOR)
    return (b & epsilon) ^ (a & delta) ^ (epsilon & delta) ^ BinarySharedTensor.from_shares(c_share())


def bit_to_arithmetic(x: Any) -> Any:
    """Arithmetic shares of the bits of binary shares x (CrypTen's `beaver.B2A_single_bit`, dealer request
    overlapped): the last round of every comparison."""
    import_crypten()
    from crypten.mpc.primitives.arithmetic import ArithmeticSharedTensor
    from crypten.mpc.primitives.binary import BinarySharedTensor

    g = _stream(x)
    r_bits = g.bits(x.size(), bitlength=1)
    r_share = dealt("B2A", (x.size(),), {}, x.size(), lambda: g.ring(x.size()))
    z = reveal_or_end(lambda masked: masked[0].reveal(), [x ^ BinarySharedTensor.from_shares(r_bits)])
    r = ArithmeticSharedTensor.from_shares(r_share(), precision=0)
    return r * (1 - 2 * z) + z


def install() -> None:
    """Make CrypTen's multiplications, matrix products, binary ANDs and bit conversions (with the TTP dealer,
    passive security, two or more parties) use the overlapped versions above."""
    crypten = import_crypten()
    from crypten.mpc.primitives import beaver

    if crypten.cfg.mpc.active_security or crypten.cfg.mpc.provider != "TTP":
        return
    setattr(beaver, "__beaver_protocol", beaver_protocol)  # the module-level name CrypTen calls
    beaver.AND = binary_and
    beaver.B2A_single_bit = bit_to_arithmetic
