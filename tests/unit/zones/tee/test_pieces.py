"""The enclave sums the MPC parties' ring shares of an mpc->he tensor only once all came, and refuses shares that
do not fit, duplicates, and more than it holds."""

from __future__ import annotations

import numpy as np
import pytest

from zones.tee import pieces
from zones.tee.pieces import PieceError, Pieces, PiecesFull


def _uniform(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-(2**63), 2**63 - 1, size=shape, dtype=np.int64)


def test_the_sum_comes_once_every_share_came() -> None:
    p = Pieces(ttl_s=60)
    y = np.arange(12, dtype=np.int64).reshape(3, 4) * 1000
    a, b = _uniform((3, 4), 1), _uniform((3, 4), 2)
    with np.errstate(over="ignore"):
        c = y - a - b
    assert p.add("s", "t", 0, 3, 16, a) is None
    assert p.add("s", "t", 2, 3, 16, c) is None
    assert p.add("s", "other", 0, 2, 16, a) is None  # another tensor is kept apart
    assert np.array_equal(p.add("s", "t", 1, 3, 16, b), y)  # wraps around the ring back to y
    assert p.add("s", "t", 0, 3, 16, a) is None  # a new conversion of the same name starts afresh


def test_shares_that_do_not_fit_are_refused() -> None:
    p = Pieces(ttl_s=60)
    p.add("s", "t", 0, 2, 16, _uniform((3, 4), 1))
    with pytest.raises(PieceError, match="came twice"):
        p.add("s", "t", 0, 2, 16, _uniform((3, 4), 2))
    with pytest.raises(PieceError, match=r"\(2, 16, \(4, 3\)\); the first as one of \(2, 16, \(3, 4\)\)"):
        p.add("s", "t", 1, 2, 16, _uniform((4, 3), 2))
    with pytest.raises(PieceError, match="first as one of"):
        p.add("s", "t", 1, 2, 20, _uniform((3, 4), 2))


def test_the_enclave_holds_a_bounded_number_and_drops_stale_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pieces, "MAX_PENDING", 2)
    p = Pieces(ttl_s=60)
    p.add("s", "a", 0, 2, 16, _uniform((2,), 1))
    p.add("s", "b", 0, 2, 16, _uniform((2,), 1))
    with pytest.raises(PiecesFull, match="holds 2 partly received conversions"):
        p.add("s", "c", 0, 2, 16, _uniform((2,), 1))
    p.ttl_s = 0.0  # both are stale now: dropped before the next one is taken
    assert p.add("s", "c", 0, 2, 16, _uniform((2,), 1)) is None
    assert p.add("s", "a", 1, 2, 16, _uniform((2,), 1)) is None  # a's first share was dropped
