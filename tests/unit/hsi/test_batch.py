"""A batch's geometry: padded rows, per-sequence positions, the key padding mask and the pooling weights."""

from __future__ import annotations

import pytest
import torch

from hsi.batch import Batch, pad


def test_one_sequence_is_no_batch() -> None:
    assert Batch.of([7]) is None
    assert Batch.of([]) is None
    ids, batch = pad([[5, 6, 7]], 0)
    assert batch is None and ids.tolist() == [5, 6, 7]


def test_empty_sequence_refused() -> None:
    with pytest.raises(ValueError, match="no tokens"):
        Batch.of([3, 0])


def test_padding_and_positions() -> None:
    ids, batch = pad([[1, 2, 3], [4], [5, 6]], 0)
    assert batch == Batch((3, 1, 2))
    assert (batch.count, batch.width, batch.rows) == (3, 3, 9)
    assert ids.tolist() == [1, 2, 3, 4, 0, 0, 5, 6, 0]
    assert batch.positions().tolist() == [0, 1, 2] * 3
    assert batch.padding()[:, 0, 0].tolist() == [[False] * 3, [False, True, True], [False, False, True]]


def test_pool_weights_average_each_sequence_over_its_own_rows() -> None:
    batch = Batch((3, 1, 2))
    x = torch.arange(9.0)[:, None]
    assert (batch.pool_weights() @ x).flatten().tolist() == pytest.approx([1.0, 3.0, 6.5])


def test_heads_split_and_merge_round_trip() -> None:
    batch = Batch((2, 4))
    x = torch.randn(batch.rows, 6)
    h = batch.split_heads(x, 3, 2)
    assert h.shape == (2, 3, 4, 2)
    assert torch.equal(h[1, 2, 3], x[7, 4:6])  # sequence 1, token 3 is row 7; head 2 is features 4..5
    assert torch.equal(batch.merge_heads(h), x)
