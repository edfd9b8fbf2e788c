"""TT-Rec: factorizations, the largest rank that fits, the contraction."""

from __future__ import annotations

import math

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.tt import TTEmbedding, balanced_factors, core_params, id_factors


def make(features, budget=16_000, **kwargs) -> TTEmbedding:
    return TTEmbedding(features, dim=16, max_table_params=budget, init_std=0.05, seed=0, **kwargs)


def test_factorizations():
    assert balanced_factors(16, 3) == [2, 2, 4] and balanced_factors(128, 3) == [4, 4, 8]
    for n, parts in [(100_000, 3), (10_000_000, 3), (7, 2), (1000, 4)]:
        radices = id_factors(n, parts)
        assert math.prod(radices) >= n and math.prod(radices[:-1]) < n


@pytest.mark.parametrize("n, budget, rank", [(100_000, 16_000, 11), (10_000_000, 160_000, 17),
                                             (5000, 1600, 5)])
def test_rank_is_the_largest_that_fits(n, budget, rank):
    method = make([FeatureSpec("f", n)], budget)
    radices, got = method.plans[0]
    assert got == rank
    assert core_params(radices, [2, 2, 4], rank) <= budget < core_params(radices, [2, 2, 4], rank + 1)
    assert method.learned_params() == [core_params(radices, [2, 2, 4], rank)]
    assert sum(p.numel() for p in method.parameters()) == method.learned_params()[0]


def test_vectors_are_the_tensor_train_contraction():
    features = [FeatureSpec("a", 1000), FeatureSpec("b", 30_000), FeatureSpec("full", 10)]
    method = make(features, budget=2000)
    ids = torch.stack([torch.tensor([0, 1, 999, 517]), torch.tensor([0, 29_999, 12_345, 77]),
                       torch.tensor([0, 9, 3, 4])])
    kjt = KeyedJaggedTensor(keys=[f.name for f in features], values=ids.reshape(-1),
                            lengths=torch.ones(12, dtype=torch.int32))
    with torch.no_grad():
        out = method(kjt)
    for g, (rank, feats) in enumerate(method.groups):
        for pos, f in enumerate(feats):
            radices = method.plans[f][0]
            offsets = [sum(method.plans[h][0][t] for h in feats[:pos]) for t in range(3)]
            cores = [getattr(method, f"core{g}_{t}") for t in range(3)]
            for b, i in enumerate(ids[f].tolist()):
                digits = [i % radices[0], i // radices[0] % radices[1], i // (radices[0] * radices[1])]
                g1 = cores[0][offsets[0] + digits[0]].view(2, rank)
                g2 = cores[1][offsets[1] + digits[1]].view(rank, 2, rank)
                g3 = cores[2][offsets[2] + digits[2]].view(rank, 4)
                expected = torch.einsum("xa,ayb,bz->xyz", g1, g2, g3).reshape(16)
                torch.testing.assert_close(out[b, f], expected)
    torch.testing.assert_close(out[:, 2], method.full_tables.view(10, 16)[ids[2]])


def test_too_small_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="rank-1"):
        make([FeatureSpec("f", 10_000_000)], budget=100)
