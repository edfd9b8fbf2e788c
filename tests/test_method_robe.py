"""ROBE: one circular array of P floats, blocks at hashed offsets, full features row-major."""

from __future__ import annotations

import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import FeatureSpec
from cce_dlrm.embeddings.hash_family import universal_hash
from cce_dlrm.embeddings.robe import ROBEEmbedding

FEATURES = [FeatureSpec("small", 50), FeatureSpec("big", 50_000)]


def make(budget=1000, columns=4) -> ROBEEmbedding:
    return ROBEEmbedding(FEATURES, dim=16, max_table_params=budget, init_std=0.05, seed=0, columns=columns)


def lookup(method, ids: torch.Tensor) -> torch.Tensor:
    kjt = KeyedJaggedTensor(keys=["small", "big"], values=ids.reshape(-1),
                            lengths=torch.ones(ids.numel(), dtype=torch.int32))
    return method(kjt)


def test_budget_is_the_array_size():
    method = make(1000)
    assert method.learned_params() == [800, 1000] and method.memory.numel() == 1800
    assert method.aux_bytes() == [0, 2 * 4 * 8]


def test_blocks_start_at_hashed_offsets_and_wrap_around():
    method = make(1000)
    ids = torch.arange(2000)
    starts = universal_hash(ids, method.hash_a[1, 0], method.hash_b[1, 0], 1000)
    near_end = ids[starts > 996][:3]  # a 4-float block from 997.. wraps to the array's start
    assert len(near_end) == 3
    pair = torch.stack([near_end % 50, near_end])
    with torch.no_grad():
        out = lookup(method, pair)
    array = method.memory[800:]  # the big feature's array follows the small feature's table
    for row, i in enumerate(near_end):
        for j in range(4):
            start = universal_hash(i, method.hash_a[1, j], method.hash_b[1, j], 1000)
            expected = array[(start + torch.arange(4)) % 1000]
            torch.testing.assert_close(out[row, 1, 4 * j : 4 * j + 4], expected)


def test_full_features_are_row_major_tables_and_gradients_touch_only_read_floats():
    method = make(1000, columns=2)
    ids = torch.stack([torch.tensor([3, 7]), torch.tensor([11, 12])])
    out = lookup(method, ids)
    torch.testing.assert_close(out[:, 0], method.memory[:800].view(50, 16)[ids[0]])
    out[:, 0].sum().backward()
    touched = method.memory.grad.nonzero().view(-1)
    assert torch.equal(touched, torch.cat([torch.arange(48, 64), torch.arange(112, 128)]))
