"""cafe's defining property: an important id gets a row of its own, keeps it, and migrates in."""

import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import FeatureSpec, TrainContext
from cce_dlrm.embeddings.cafe import CAFEEmbedding, cafe_sizes

FEATURES = [FeatureSpec("small", 7), FeatureSpec("large", 20000)]
DIM, CAP, BATCH, STAR = 16, 2048, 256, 12345


def make():
    return CAFEEmbedding(FEATURES, DIM, CAP, init_std=0.05, seed=0, hot_share=0.5, slots_per_bucket=4)


def batch(step: int, star_share: float = 0.25):
    """Random ids, with STAR taking ``star_share`` of the samples of the large feature."""
    gen = torch.Generator().manual_seed(step)
    small = torch.randint(0, 7, (BATCH,), generator=gen)
    large = torch.randint(0, 20000, (BATCH,), generator=gen)
    large[: int(BATCH * star_share)] = STAR
    ids = torch.stack([small, large])
    kjt = KeyedJaggedTensor(keys=["small", "large"], values=ids.reshape(-1),
                            lengths=torch.ones(2 * BATCH, dtype=torch.int32))
    return kjt, ids


def rows_of(method, ids):
    return method.indices(method.groups[0], ids)[:, 0, 0]  # (F, B)


def step(method, n, star_share=0.25):
    kjt, _ = batch(n, star_share)
    target = torch.randn(BATCH, 2, DIM, generator=torch.Generator().manual_seed(1000 + n))
    (method(kjt) - target).pow(2).sum().backward()
    return method.on_train_step(n, 100, TrainContext(tables=method.table_access()))


def test_budget_split():
    method = make()
    buckets, hashed = cafe_sizes(CAP, DIM, 0.5, 4)
    assert (buckets, hashed) == (16, 64)
    assert method.learned_params() == [7 * DIM, (buckets * 4 + hashed) * DIM]
    assert method.aux_bytes() == [0, 16 * 4 * 12 + 32]


def test_a_hot_id_gets_its_own_row_and_keeps_it():
    method = make()
    hot_rows = method.buckets * method.slots
    _, ids = batch(0)
    before = rows_of(method, ids)[1, 0].item()
    assert before >= hot_rows  # at start every id shares hashed rows
    shared_vector = method.ebc.embedding_bags["large__s0c0"].weight[before].detach().clone()
    events = step(method, 1)
    assert events["cafe/migrations"] > 0
    row = rows_of(method, ids)[1, 0].item()
    assert row < hot_rows
    # migration: the hot row starts from the id's shared vector
    torch.testing.assert_close(method.ebc.embedding_bags["large__s0c0"].weight[row].detach(), shared_vector)
    for n in range(2, 30):  # other ids come and go; the important one stays
        step(method, n)
        _, ids = batch(n)
        rows = rows_of(method, ids)[1]
        assert rows[0].item() == row
        others = rows[ids[1] != STAR]
        assert (others != row).all(), "a hot row is never shared"
    # full-sized features never go through the sketch
    _, ids = batch(0)
    assert torch.equal(rows_of(method, ids)[0], ids[0])


def test_an_id_that_stops_mattering_is_evicted_to_the_shared_rows():
    method = make()
    step(method, 1, star_share=0.25)
    _, ids = batch(0)
    assert rows_of(method, ids)[1, 0].item() < method.buckets * method.slots
    bucket = method._bucket(torch.tensor([[STAR]]), torch.tensor([1]))[0, 0]
    # a burst of heavier newcomers in STAR's bucket pushes it out (SpaceSaving: lowest score goes)
    same_bucket = [i for i in range(20000) if i != STAR and
                   method._bucket(torch.tensor([[i]]), torch.tensor([1]))[0, 0] == bucket][:8]
    ids = torch.tensor([same_bucket])
    for _ in range(len(same_bucket)):  # one newcomer per bucket per update
        method.update_sketch(ids, torch.full((1, len(same_bucket)), 1e6))
    row = rows_of(method, torch.stack([torch.zeros(1, dtype=torch.int64), torch.tensor([STAR])]))[1, 0].item()
    assert row >= method.buckets * method.slots


def test_recorded_norms_are_bounded_without_train_steps():
    method = make()
    for n in range(5):
        kjt, _ = batch(n)
        method(kjt).sum().backward()
    assert len(method._pending) == method.update_every
