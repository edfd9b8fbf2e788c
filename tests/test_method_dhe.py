"""DHE: the width that fits P, the encoding, the per-feature init scale."""

from __future__ import annotations

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.dhe import DHEEmbedding, mlp_params

FEATURES = [FeatureSpec("small", 50), FeatureSpec("big", 50_000), FeatureSpec("huge", 2_000_000)]


def make(budget=16_000, **kwargs) -> DHEEmbedding:
    return DHEEmbedding(FEATURES, dim=16, max_table_params=budget, init_std=0.05, seed=0, **kwargs)


@pytest.mark.parametrize("budget, hashes, layers, width", [(16_000, 64, 2, 91), (1600, 64, 2, 16),
                                                          (160_000, 64, 2, 361), (4000, 32, 1, 81)])
def test_width_is_the_largest_that_fits(budget, hashes, layers, width):
    method = make(budget, hashes=hashes, hidden_layers=layers)
    assert method.width == width
    assert mlp_params(hashes, width, layers, 16) <= budget < mlp_params(hashes, width + 1, layers, 16)
    assert method.learned_params() == [800] + [mlp_params(hashes, width, layers, 16)] * 2
    assert sum(p.numel() for p in method.parameters()) == sum(method.learned_params())


def test_encoding_is_uniform_in_minus_one_one_and_deterministic():
    method = make()
    codes = method.encode(torch.arange(10_000).expand(2, -1))
    assert codes.shape == (2, 10_000, 64)
    assert codes.min() >= -1 and codes.max() <= 1
    assert abs(codes.mean().item()) < 0.02 and codes.std().item() == pytest.approx(3**-0.5, rel=0.05)
    assert torch.equal(codes, make().encode(torch.arange(10_000).expand(2, -1)))


def test_every_feature_starts_at_init_std():
    method = make()
    ids = torch.stack([torch.arange(20_000) % f.num_ids for f in FEATURES]) * 7 % 2_000_000
    ids[0] %= 50
    ids[1] %= 50_000
    kjt = KeyedJaggedTensor(keys=[f.name for f in FEATURES], values=ids.reshape(-1),
                            lengths=torch.ones(ids.numel(), dtype=torch.int32))
    with torch.no_grad():
        out = method(kjt)
    for f in range(3):
        assert out[:, f].std().item() == pytest.approx(0.05, rel=0.1), f


def test_too_small_budget_is_a_config_error():
    with pytest.raises(ConfigError, match="lower method.hashes"):
        make(budget=60)


def test_the_papers_sizing_ties_hashes_to_the_hidden_width():
    """PAPER.md: hashes = h, hashes*h + 2h^2 + h*d = P; P = 64,000, d = 64 gives h = 136
    (135 here, where biases count too)."""
    from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
    from cce_dlrm.embeddings.dhe import DHEEmbedding, mlp_params

    method = DHEEmbedding([FeatureSpec("f", 10**6)], dim=64, max_table_params=64_000, init_std=0.05,
                          seed=0, hashes="width", hidden_layers=3)
    assert method.hashes == method.width == 135
    assert mlp_params(135, 135, 3, 64) <= 64_000 < mlp_params(136, 136, 3, 64)
    with pytest.raises(ConfigError, match="hashes"):
        DHEEmbedding([FeatureSpec("f", 10**6)], dim=64, max_table_params=64_000, init_std=0.05,
                     seed=0, hashes="many")
