"""Every method found in configs/method/ obeys the embedding-module contract."""

import pytest
import torch
from hydra.utils import instantiate
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import FeatureSpec, feature_budget

from conftest import compose_config, method_keys

FEATURES = [FeatureSpec("small", 7), FeatureSpec("mid", 3000), FeatureSpec("large", 20000)]
DIM, BUDGET, BATCH, INIT_STD = 16, 2048, 4096, 0.05


def make(key, **overrides):
    cfg = compose_config([f"method={key}"])
    return instantiate(cfg.method)(features=FEATURES, dim=DIM, max_table_params=BUDGET,
                                   init_std=INIT_STD, seed=0, **overrides)


def batch(batch_size=BATCH, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, f.num_ids, (batch_size,), generator=gen) for f in FEATURES])
    return KeyedJaggedTensor(keys=[f.name for f in FEATURES], values=ids.reshape(-1),
                             lengths=torch.ones(len(FEATURES) * batch_size, dtype=torch.int32))


@pytest.mark.parametrize("key", method_keys())
def test_forward_backward_every_parameter_gets_a_gradient(key):
    method = make(key)
    out = method(batch(256))
    assert out.shape == (256, len(FEATURES), DIM)
    assert torch.isfinite(out).all()
    (out * torch.randn_like(out)).sum().backward()
    params = list(method.named_parameters())
    assert params, "a method must learn something"
    for name, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{key}: {name} got no gradient"


@pytest.mark.parametrize("key", method_keys())
def test_budget_and_accounting(key):
    method = make(key)
    learned, aux = method.learned_params(), method.aux_bytes()
    assert len(learned) == len(aux) == len(FEATURES)
    assert all(a >= 0 for a in aux)
    counted = sum(p.numel() for p in method.parameters())
    assert sum(learned) == counted, "learned_params must count every learned float"
    for f, n in zip(FEATURES, learned):
        if method.respects_budget:
            assert n <= feature_budget(f.num_ids, DIM, BUDGET), f"{key} exceeds P on {f.name}"


@pytest.mark.parametrize("key", method_keys())
def test_init_scale_is_the_same_for_every_method(key):
    """The fair-comparison rule: composed vectors start with coordinate std init_std."""
    with torch.no_grad():
        out = make(key)(batch())
    assert out.std().item() == pytest.approx(INIT_STD, rel=0.1)


@pytest.mark.parametrize("key", method_keys())
def test_deterministic_from_seed(key):
    kjt = batch(64)
    with torch.no_grad():
        torch.manual_seed(123)
        a = make(key)(kjt)
        torch.manual_seed(456)  # the global RNG must not matter: everything comes from `seed`
        b = make(key)(kjt)
    torch.testing.assert_close(a, b)
