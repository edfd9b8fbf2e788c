"""Effective step size of every embedding method at init: how far one SGD step moves an id.

One feature of ``num_ids`` ids, one batch of ``batch`` ids drawn uniformly, the loss
``L = mean_b <u_b, y_b>`` with ``y_b`` the output vector of sample ``b`` and ``u_b`` i.i.d.
``N(0, I_d)`` (a fixed random linear functional of the outputs). One plain SGD step of
learning rate ``lr`` on every parameter of the method; then for every distinct id ``i`` of the
batch, with ``g_i = dL/dy_i`` (the sum over its samples) and ``y_i, y'_i`` its vector before
and after the step::

    step_i = <y_i - y'_i, g_i> / (lr * |g_i|^2)

and the table reports the mean over ids. A full table gives exactly 1; a hashed table 1 up
to the (zero-mean) pull of colliding ids; two summed tables that both get the full gradient
2; a product of factors ``a * b`` about ``E[a^2] + E[b^2]``. The loss is a batch mean, so the
step is small and the number is the first-order (linear) response.

Example::

    effective_step(method)   # StepResult(mean=1.0, ..., init_std=0.05)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import ConfigError, FeatureSpec

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@dataclass(frozen=True)
class StepResult:
    mean: float       # mean over distinct ids of step_i
    sem: float        # its standard error (spread over ids / sqrt(ids))
    ids: int          # distinct ids in the batch
    init_std: float   # coordinate std of the output vectors at init (the shared init rule)


def method_keys(configs: Path = CONFIGS) -> list[str]:
    """Every method offered: the files in configs/method/."""
    return sorted(p.stem for p in (configs / "method").glob("*.yaml"))


def compose_method(key: str, overrides: list[str] | None = None, configs: Path = CONFIGS) -> DictConfig:
    """The training config with ``method=key`` (and ``overrides``), as the entry point composes it."""
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        return compose("config", overrides=[f"method={key}", *(overrides or [])])


def build_one_feature(cfg: DictConfig, num_ids: int, dim: int | None = None,
                      max_table_params: int | None = None):
    """The method of ``cfg`` for one feature of ``num_ids`` ids (as training's build_method)."""
    factory = instantiate(cfg.method)
    if not callable(factory):
        raise ConfigError("a method config must set `_partial_: true` (its sizes come at run time)")
    return factory(features=[FeatureSpec("f", num_ids)],
                   dim=int(dim if dim is not None else cfg.model.embedding_dim),
                   max_table_params=max_table_params if max_table_params is not None else cfg.max_table_params,
                   init_std=cfg.init_std, seed=cfg.seed)


def effective_step(method: torch.nn.Module, num_ids: int, batch: int = 2048, lr: float = 1.0,
                   seed: int = 0) -> StepResult:
    """One SGD step on ``method`` (modified in place); see the module docstring."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_ids, (batch,), generator=gen)
    kjt = KeyedJaggedTensor(keys=["f"], values=ids, lengths=torch.ones(batch, dtype=torch.int32))
    params = [p for p in method.parameters() if p.requires_grad]
    method.train()
    before = method(kjt)[:, 0]                       # (B, d)
    u = torch.randn(before.shape, generator=gen)
    loss = (u * before).sum() / batch
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p.sub_(lr * g)
        after = method(kjt)[:, 0]
    unique, inverse = torch.unique(ids, return_inverse=True)
    g_id = torch.zeros(unique.numel(), u.shape[1]).index_add_(0, inverse, u / batch)
    first = torch.zeros(unique.numel(), dtype=torch.long).scatter_(0, inverse.flip(0), torch.arange(batch).flip(0))
    delta = (before.detach() - after)[first]          # each id's change, once
    steps = (delta * g_id).sum(1) / (lr * (g_id * g_id).sum(1))
    return StepResult(mean=float(steps.mean()), sem=float(steps.std() / steps.numel() ** 0.5),
                      ids=int(unique.numel()), init_std=float(before.detach().std()))


def measure_all(keys: list[str] | None = None, num_ids: int = 20_000, batch: int = 2048,
                lr: float = 1.0, overrides: dict[str, list[str]] | None = None) -> dict[str, StepResult]:
    """{label: result} for every method key (``overrides``: extra variants, label -> overrides)."""
    runs = {key: [f"method={key}"] for key in (keys if keys is not None else method_keys())}
    runs.update(overrides or {})
    out = {}
    for label, over in runs.items():
        key = next(o.split("=", 1)[1] for o in over if o.startswith("method="))
        cfg = compose_method(key, [o for o in over if not o.startswith("method=")])
        out[label] = effective_step(build_one_feature(cfg, num_ids), num_ids, batch, lr, seed=cfg.seed)
    return out


def markdown(results: dict[str, StepResult], hashing: str = "hashing") -> str:
    base = results.get(hashing)
    lines = ["| method | effective step | +- (s.e.) | ratio to hashing | output std at init | ids |",
             "|---|---|---|---|---|---|"]
    for label, r in results.items():
        ratio = f"{r.mean / base.mean:.2f}" if base else "-"
        lines.append(f"| {label} | {r.mean:.3f} | {r.sem:.3f} | {ratio} | {r.init_std:.4f} | {r.ids} |")
    return "\n".join(lines) + "\n"
