"""CE concat: budget, the lookup formula, hashing from the seed only."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.ce import CEEmbedding
from cce_dlrm.embeddings.hash_family import universal_hash

FEATURES = [FeatureSpec("small", 50), FeatureSpec("big", 50_000)]


def make(dim=16, budget=4000, seed=0, columns=4) -> CEEmbedding:
    return CEEmbedding(FEATURES, dim=dim, max_table_params=budget, init_std=0.05, seed=seed, columns=columns)


def kjt(ids: torch.Tensor) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=[f.name for f in FEATURES], values=ids.reshape(-1),
                             lengths=torch.ones(ids.numel(), dtype=torch.int32))


@pytest.mark.parametrize("dim, budget, columns, rows", [(16, 4000, 4, 250), (16, 16_000, 2, 1000),
                                                        (64, 160_000, 16, 2500), (8, 1001, 2, 125)])
def test_parameter_count_is_floor_p_over_d_rows(dim, budget, columns, rows):
    method = make(dim, budget, columns=columns)
    assert method.layouts[1].rows == ((rows,) * columns,)
    assert method.learned_params() == [50 * dim, rows * dim]
    assert method.aux_bytes() == [0, 2 * columns * 8]


def test_vector_is_the_concatenation_of_hashed_column_rows():
    method = make()
    ids = torch.stack([torch.arange(8), torch.tensor([0, 1, 2, 3, 249, 250, 30_000, 49_999])])
    with torch.no_grad():
        out = method(kjt(ids))
    for j in range(4):
        rows = universal_hash(ids[1], method.hash_a[1, j], method.hash_b[1, j], 250)
        table = method.ebc.embedding_bags[f"big__s0c{j}"].weight
        torch.testing.assert_close(out[:, 1, 4 * j : 4 * j + 4], table[rows])
    torch.testing.assert_close(out[:, 0], method.ebc.embedding_bags["small__s0c0"].weight[ids[0]])


def test_hashing_depends_on_the_seed_only():
    torch.manual_seed(1)
    a = make(seed=5)
    torch.manual_seed(2)  # another process, another global RNG state: same hashes, same tables
    b = make(seed=5)
    ids = torch.stack([torch.arange(100) % 50, torch.arange(100) * 499])
    assert torch.equal(a.hash_a, b.hash_a) and torch.equal(a(kjt(ids)), b(kjt(ids)))
    assert not torch.equal(a.hash_a, make(seed=6).hash_a)


def test_one_column_shares_a_group_with_full_tables():
    method = make(columns=1)
    ids = torch.stack([torch.arange(50), torch.arange(50) * 1000])
    with torch.no_grad():
        out = method(kjt(ids))
    torch.testing.assert_close(out[:, 0], method.ebc.embedding_bags["small__s0c0"].weight[ids[0]])
    assert torch.unique(out[:, 1], dim=0).shape[0] > 40  # hashed into 250 rows


def test_columns_must_give_widths_fbgemm_accepts():
    with pytest.raises(ConfigError, match="not divisible"):
        make(columns=3)
    with pytest.raises(ConfigError, match="multiple of 4"):
        make(dim=8, columns=4)
