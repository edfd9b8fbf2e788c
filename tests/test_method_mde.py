"""mde's defining property: table widths follow popularity (vocabulary size) by the power law."""

import logging

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.mde import MDEEmbedding, mde_dims

DIM = 32
FEATURES = [FeatureSpec("tiny", 4), FeatureSpec("mid", 400), FeatureSpec("big", 40_000), FeatureSpec("small", 40)]


def kjt(features, batch=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, f.num_ids, (batch,), generator=gen) for f in features])
    return KeyedJaggedTensor(keys=[f.name for f in features], values=ids.reshape(-1),
                             lengths=torch.ones(len(features) * batch, dtype=torch.int32))


def test_dimensions_follow_popularity():
    # the power law over vocabulary sizes: the smallest gets d, larger ones narrower tables
    assert mde_dims([f.num_ids for f in FEATURES], DIM, 0.3) == [32, 8, 4, 16]
    for f, width in zip(FEATURES, mde_dims([f.num_ids for f in FEATURES], DIM, 0.3)):
        assert width == min(DIM, max(4, 4 * round(DIM * (4 / f.num_ids) ** 0.3 / 4)))
    # under a cap that only "tiny" fits in full, every other feature takes its rule width
    method = MDEEmbedding(FEATURES, DIM, 1_000, init_std=0.05, seed=0, alpha=0.3)
    by_size = sorted(zip([f.num_ids for f in FEATURES], method.table_dims))
    assert [w for _, w in by_size] == [32, 16, 8, 4]  # non-increasing in vocabulary size
    # a hotter temperature narrows more; alpha = 0 gives every table the full width
    hotter = MDEEmbedding(FEATURES, DIM, 1_000, init_std=0.05, seed=0, alpha=0.6).table_dims
    assert all(h <= w for h, w in zip(hotter, method.table_dims)) and hotter != method.table_dims
    assert MDEEmbedding(FEATURES, DIM, 1_000, init_std=0.05, seed=0, alpha=0.0).table_dims == [DIM] * 4


def test_projection_and_output():
    cap = 400 * 8 + 8 * DIM  # mid's 8-wide table and projection fit exactly; "small" fits in full
    method = MDEEmbedding(FEATURES, DIM, cap, init_std=0.05, seed=0)
    assert method.table_dims == [32, 8, 4, 32] and method.table_rows[1] == 400 and 1 not in method.hashed
    batch = kjt(FEATURES)
    with torch.no_grad():
        out = method(batch)
        ids = batch.values().view(len(FEATURES), -1)
        mid = method.ebc.embedding_bags["mid__s0c0"].weight[ids[1]] @ method.proj_w8[0]
    assert out.shape == (256, 4, DIM)
    torch.testing.assert_close(out[:, 1], mid)
    assert method.learned_params()[1] == cap


def test_hashing_where_the_cap_cannot_hold_the_table_and_says_so(caplog):
    cap = 2_000  # big: 40,000 x 4 + 4 x 32 does not fit; mid: 400 x 8 + 8 x 32 = 3,456 neither
    with caplog.at_level(logging.WARNING):
        method = MDEEmbedding(FEATURES, DIM, cap, init_std=0.05, seed=0)
    assert [FEATURES[i].name for i in method.hashed] == ["mid", "big"]
    assert method.table_rows[1] == (cap - 8 * DIM) // 8 and method.table_rows[2] == (cap - 4 * DIM) // 4
    assert "hashed" in caplog.text and "big (n=40000)" in caplog.text
    assert all(n <= cap for n in method.learned_params())
    with torch.no_grad():
        out = method(kjt(FEATURES))
    assert torch.isfinite(out).all()
    assert method.aux_bytes() == [0, 16, 16, 0]


def test_too_small_a_cap_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="cannot hold"):
        MDEEmbedding(FEATURES, DIM, 130, init_std=0.05, seed=0)
