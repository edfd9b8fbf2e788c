"""Hash embeddings: the budget split and the weighted sum over a shared pool."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.hash_family import universal_hash
from cce_dlrm.embeddings.hemb import HashEmbedding

FEATURES = [FeatureSpec("small", 50), FeatureSpec("big", 50_000)]


def make(budget=16_000, **kwargs) -> HashEmbedding:
    return HashEmbedding(FEATURES, dim=16, max_table_params=budget, init_std=0.05, seed=0, **kwargs)


@pytest.mark.parametrize("budget, hashes, share, k, rows", [(16_000, 2, 0.125, 1000, 875),
                                                           (1600, 2, 0.125, 100, 87),
                                                           (160_000, 3, 0.25, 13_333, 7500)])
def test_budget_split_matches_the_formula(budget, hashes, share, k, rows):
    """K = floor(share * P / hashes) weight rows, floor((P - K*hashes) / d) pool rows."""
    method = make(budget, hashes=hashes, weight_share=share)
    assert method.weight_rows[1] == k and method.layouts[1].rows == ((rows,),)
    assert method.learned_params() == [800, rows * 16 + k * hashes]
    assert method.learned_params()[1] <= budget
    assert sum(p.numel() for p in method.parameters()) == sum(method.learned_params())


def test_vector_is_the_importance_weighted_sum_of_pool_rows():
    method = make()
    with torch.no_grad():
        method.importance.uniform_(-1, 1)  # away from the initial 1s
    ids = torch.stack([torch.arange(6), torch.tensor([0, 1, 874, 875, 12_345, 49_999])])
    kjt = KeyedJaggedTensor(keys=["small", "big"], values=ids.reshape(-1),
                            lengths=torch.ones(12, dtype=torch.int32))
    with torch.no_grad():
        out = method(kjt)
    pool = method.ebc.embedding_bags["big__s0c0"].weight
    weights = method.importance[universal_hash(ids[1], method.hash_a[1, 2], method.hash_b[1, 2], 1000)]
    expected = sum(weights[:, j : j + 1] * pool[universal_hash(ids[1], method.hash_a[1, j],
                                                                method.hash_b[1, j], 875)]
                   for j in range(2))
    torch.testing.assert_close(out[:, 1], expected)
    torch.testing.assert_close(out[:, 0], method.ebc.embedding_bags["small__s0c0"].weight[ids[0]])


def test_importance_weights_start_at_one_and_the_pool_is_scaled():
    method = make()
    assert torch.all(method.importance == 1)
    pool = method.ebc.embedding_bags["big__s0c0"].weight
    assert pool.std().item() == pytest.approx(0.05 / 2**0.5, rel=0.1)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="weight_share"):
        make(weight_share=1.5)
    with pytest.raises(ConfigError, match="no pool rows"):
        make(budget=20, weight_share=0.5)
