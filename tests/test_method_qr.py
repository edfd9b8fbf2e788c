"""QR: budgets, complementary partitions (distinct ids, distinct vectors), fallbacks."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec
from cce_dlrm.embeddings.qr import QREmbedding


def every_id(n: int) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(keys=["f"], values=torch.arange(n), lengths=torch.ones(n, dtype=torch.int32))


def make(n, dim=16, budget=4000, **kwargs) -> QREmbedding:
    return QREmbedding([FeatureSpec("f", n)], dim=dim, max_table_params=budget, init_std=0.05, seed=0,
                       **kwargs)


@pytest.mark.parametrize("n, dim, budget, m", [(10_000, 16, 4000, 50), (100_000, 16, 16_000, 113),
                                               (5000, 8, 2000, 22), (1_000_000, 64, 160_000, 500)])
def test_two_partitions_use_the_smallest_m_that_fits(n, dim, budget, m):
    """(ceil(n/m) + m) * d learned floats, m the smallest remainder radix within P."""
    method = make(n, dim, budget)
    assert method.layouts[0].rows == ((m,), (math.ceil(n / m),))
    assert method.learned_params() == [(math.ceil(n / m) + m) * dim]
    assert method.learned_params()[0] <= budget < (math.ceil(n / (m - 1)) + m - 1) * dim
    assert method.aux_bytes() == [0]


@pytest.mark.parametrize("op", ["mult", "add", "concat"])
@pytest.mark.parametrize("n", [3000, 20_000])  # 20,000 needs three (mult, add) or four (concat) parts
def test_distinct_ids_get_distinct_vectors(op, n):
    method = make(n, budget=2048, op=op)
    assert sum(method.learned_params()) <= 2048
    with torch.no_grad():
        vectors = method(every_id(n))[:, 0]
    assert torch.unique(vectors, dim=0).shape[0] == n


def test_vector_is_the_product_of_remainder_and_quotient_rows():
    method = make(10_000)  # m = 50
    remainder = method.ebc.embedding_bags["f__s0c0"].weight
    quotient = method.ebc.embedding_bags["f__s1c0"].weight
    ids = torch.tensor([0, 49, 50, 9999, 1234])
    with torch.no_grad():
        out = method(KeyedJaggedTensor(keys=["f"], values=ids, lengths=torch.ones(5, dtype=torch.int32)))
    torch.testing.assert_close(out[:, 0], remainder[ids % 50] * quotient[ids // 50])


def test_too_small_budget_uses_more_partitions_or_hashes_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        more = make(1_000_000, budget=1600)
    assert "using" in caplog.text and "partitions" in caplog.text
    assert more.layouts[0].slots > 2 and more.learned_params()[0] <= 1600
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        hashed = make(1_000_000, budget=1600, when_too_small="hash")
    assert "hashing its ids into n'=2500" in caplog.text  # two tables of 50 rows cover 2,500 ids
    assert hashed.layouts[0].rows == ((50,), (50,)) and hashed.aux_bytes() == [16]


def test_features_that_fit_stay_full_and_bad_options_are_config_errors():
    method = QREmbedding([FeatureSpec("small", 100), FeatureSpec("big", 10_000)], dim=16,
                         max_table_params=4000, init_std=0.05, seed=0)
    assert method.layouts[0].rows == ((100,),) and method.learned_params()[0] == 1600
    with pytest.raises(ConfigError, match="op"):
        make(1000, op="xor")
    with pytest.raises(ConfigError, match="multiples of 4"):
        make(1000, dim=16, op="concat", partitions=3)
    with pytest.raises(ConfigError, match="partitions"):
        make(1000, partitions=1)


@pytest.mark.parametrize("partitions", [2, 3])
def test_mult_factors_start_near_one_and_the_product_keeps_init_std(partitions):
    """All factors but the last (the quotient) uniform on [0.5, 1.5]; the last centred, scaled
    so that the product's coordinates have std init_std (the shared rule)."""
    method = make(200_000, budget=16_000, partitions=partitions)
    slots = method.layouts[0].slots
    assert slots == partitions
    for s in range(slots - 1):
        w = method.ebc.embedding_bags[f"f__s{s}c0"].weight
        assert 0.5 <= w.min() and w.max() <= 1.5 and w.mean().item() == pytest.approx(1.0, abs=0.05)
    last = method.ebc.embedding_bags[f"f__s{slots - 1}c0"].weight
    assert abs(last.mean().item()) < 0.005
    ids = torch.randint(0, 200_000, (20_000,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = method(KeyedJaggedTensor(keys=["f"], values=ids, lengths=torch.ones(20_000, dtype=torch.int32)))
    assert out.std().item() == pytest.approx(0.05, rel=0.05)
    assert abs(out.mean().item()) < 0.005


def test_add_and_features_that_fit_keep_the_shared_rule():
    add = make(10_000, op="add")
    for t in add.sub_tables:
        assert t.init_mean == 0.0 and t.init_std == pytest.approx(0.05 / math.sqrt(2))
    mult = QREmbedding([FeatureSpec("small", 100), FeatureSpec("big", 10_000)], dim=16,
                       max_table_params=4000, init_std=0.05, seed=0)
    small = [t for t in mult.sub_tables if t.feature == 0]
    assert len(small) == 1 and small[0].init_mean == 0.0 and small[0].init_std == 0.05
