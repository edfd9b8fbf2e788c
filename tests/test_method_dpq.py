"""dpq's defining property: discrete codes, and vectors that are concatenations of codewords."""

import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import FeatureSpec
from cce_dlrm.embeddings.dpq import DPQEmbedding, dpq_sizes

FEATURES = [FeatureSpec("small", 7), FeatureSpec("large", 20000), FeatureSpec("mid", 3000)]
DIM, BUDGET = 16, 2048


def make():
    return DPQEmbedding(FEATURES, DIM, BUDGET, init_std=0.05, seed=3, columns=4, codewords=32, query_hashes=2)


def kjt(batch=512, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, f.num_ids, (batch,), generator=gen) for f in FEATURES])
    return KeyedJaggedTensor(keys=[f.name for f in FEATURES], values=ids.reshape(-1),
                             lengths=torch.ones(len(FEATURES) * batch, dtype=torch.int32))


def chosen_codewords(method, features):
    codes = method.codes(features)  # (B, Fc, c)
    b, fc, c = codes.shape
    rows = [torch.cat([method.values[f, j, codes[:, f, j]] for j in range(c)], dim=-1) for f in range(fc)]
    return torch.stack(rows, dim=1)  # (B, Fc, d)


def test_budget_split():
    k, rows = dpq_sizes(BUDGET, DIM, 32, 2)
    method = make()
    assert method.codewords == k == 32 and rows == (BUDGET - 2 * 32 * DIM) // (2 * DIM)
    assert method.learned_params() == [7 * DIM, 2 * rows * DIM + 2 * k * DIM, 2 * rows * DIM + 2 * k * DIM]


def test_codes_are_discrete_and_eval_output_is_the_codeword_concatenation():
    method = make().eval()
    features = kjt()
    codes = method.codes(features)
    assert codes.dtype == torch.int64 and codes.shape == (512, 2, 4)
    assert codes.min() >= 0 and codes.max() < method.codewords
    assert codes.unique().numel() > 4  # the assignment uses many codewords, not one
    with torch.no_grad():
        out = method(features)
    torch.testing.assert_close(out[:, [1, 2]], chosen_codewords(method, features), rtol=0, atol=0)


def test_training_forward_is_the_same_codewords_and_the_assignment_learns():
    method = make().train()
    features = kjt()
    out = method(features)
    expected = chosen_codewords(method, features)
    torch.testing.assert_close(out[:, [1, 2]].detach(), expected, rtol=0, atol=1e-7)
    out.pow(2).sum().backward()
    # straight-through: keys and query tables get gradients although the forward is discrete
    assert method.keys.grad.abs().sum() > 0
    query = method.ebc.embedding_bags["large__s0c0"].weight
    assert query.grad is not None and query.grad.abs().sum() > 0
    # a full-sized feature is a plain table, untouched by the quantizer
    assert method.ebc.embedding_bags["small__s0c0"].weight.shape == (7, DIM)


def test_codes_change_when_the_assignment_is_trained():
    method = make().train()
    features = kjt()
    before = method.codes(features)
    target = torch.randn(512, len(FEATURES), DIM, generator=torch.Generator().manual_seed(1)) * 0.05
    params = [p for n, p in method.named_parameters()]
    opt = torch.optim.SGD(params, lr=5.0)
    for _ in range(20):
        opt.zero_grad()
        (method(features) - target).pow(2).sum().backward()
        opt.step()
    assert (method.codes(features) != before).any()
