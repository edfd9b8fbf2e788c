"""Validation/test metrics over a whole split, aggregated exactly across ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc
from tqdm import tqdm

from cce_dlrm.data.loader import SplitLoader


def _gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates equal-sized tensors from every rank (the loader pads to equal sizes)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts)


@torch.no_grad()
def evaluate(model: nn.Module, loader: SplitLoader, device: torch.device,
             desc: str = "eval", progress: bool = False) -> dict[str, float]:
    """BCE (log loss) and AUC over every row of ``loader``'s split (padding excluded).

    Every rank returns the same numbers: predictions are gathered, not averaged, so the
    AUC is the exact AUC of the whole split.
    """
    was_training = model.training
    model.eval()
    logits, labels, weights = [], [], []
    for batch in tqdm(loader.epoch(), total=len(loader), desc=desc, leave=False, disable=not progress):
        batch = batch.to(device)
        logits.append(model(batch.dense, batch.sparse).float())
        labels.append(batch.labels)
        weights.append(batch.weights)
    model.train(was_training)
    if not logits:
        return {"bce": float("nan"), "auc": float("nan"), "rows": 0}
    logit = _gather(torch.cat(logits))
    label = _gather(torch.cat(labels))
    keep = _gather(torch.cat(weights)) > 0
    logit, label = logit[keep], label[keep]
    bce = F.binary_cross_entropy_with_logits(logit, label).item()
    auc = binary_auroc(torch.sigmoid(logit), label.long()).item()
    return {"bce": bce, "auc": auc, "rows": int(keep.sum().item())}


def entropy_bce(click_rate: float) -> float:
    """BCE of always predicting ``click_rate``: the baseline every model must beat."""
    p = torch.tensor(click_rate, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()))
