import torch

from cce_dlrm.embeddings.hash_family import PRIME, draw_hash_constants, mix31, universal_hash


def test_mix_is_a_bijection_on_a_range():
    x = torch.arange(1 << 20)
    assert len(torch.unique(mix31(x))) == 1 << 20
    assert int(mix31(torch.tensor([PRIME])).item()) < 2**31


def test_same_seed_same_functions():
    assert all(torch.equal(u, v) for u, v in zip(draw_hash_constants(3, (4, 2)), draw_hash_constants(3, (4, 2))))
    assert not torch.equal(draw_hash_constants(3, (4,))[0], draw_hash_constants(4, (4,))[0])


def test_contiguous_ids_spread_over_buckets_for_every_seed():
    """Without the mix, ~1-2% of (a, b) pairs put 560 contiguous ids into < 70 of 256 buckets."""
    ids = torch.arange(560)
    a, b = draw_hash_constants(0, (500, 1))
    buckets = universal_hash(ids, a, b, torch.tensor(256))
    filled = torch.tensor([len(torch.unique(row)) for row in buckets])
    # a uniformly random function fills 256 * (1 - (255/256)^560) = 227 buckets on average
    assert filled.min() >= 190, filled.min()
    assert 215 < filled.float().mean() < 240
