"""Validation/test metrics over a whole split, aggregated exactly across ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from cce_dlrm.data.loader import SplitLoader
from cce_dlrm.training.progress import progress_bar


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
    AUC is the exact AUC of the whole split. Returns ``{"bce", "auc", "rows", "auc_undefined"}``;
    when the split has rows of one class only, AUC is undefined: ``auc`` is NaN (``null`` in
    metrics.json) and ``auc_undefined`` says why, e.g. "split has no positive rows".
    """
    was_training = model.training
    model.eval()
    logits, labels, weights = [], [], []
    bar = progress_bar(total=len(loader), desc=desc, enabled=progress)
    for batch in loader.epoch():
        batch = batch.to(device)
        logits.append(model(batch.dense, batch.sparse).float())
        labels.append(batch.labels)
        weights.append(batch.weights)
        bar.update(1)
    bar.close()
    model.train(was_training)
    if not logits:
        return {"bce": float("nan"), "auc": float("nan"), "rows": 0, "auc_undefined": auc_undefined_reason(0, 0)}
    logit = _gather(torch.cat(logits))
    label = _gather(torch.cat(labels))
    keep = _gather(torch.cat(weights)) > 0
    logit, label = logit[keep], label[keep]
    bce = F.binary_cross_entropy_with_logits(logit, label).item()
    rows, positives = int(keep.sum().item()), int(label.sum().item())
    reason = auc_undefined_reason(rows, positives)
    auc = float("nan") if reason else binary_auroc(torch.sigmoid(logit), label.long()).item()
    return {"bce": bce, "auc": auc, "rows": rows, "auc_undefined": reason}


def auc_undefined_reason(rows: int, positives: int) -> str | None:
    """Why AUC cannot be computed on a split of ``rows`` rows (None when it can)."""
    if rows == 0:
        return "split is empty"
    if positives == 0:
        return "split has no positive rows"
    if positives == rows:
        return "split has no negative rows"
    return None


def split_label_summary(labels) -> dict:
    """Click rate, baseline BCE and AUC definedness of one split's labels (a uint8 array)."""
    rows = int(labels.shape[0])
    positives = int(labels[:].sum(dtype="int64")) if rows else 0
    rate = positives / rows if rows else None
    return {"click_rate": rate, "baseline_bce": entropy_bce(rate) if rows else None,
            "auc_undefined": auc_undefined_reason(rows, positives)}


def entropy_bce(click_rate: float) -> float:
    """BCE of always predicting ``click_rate``: the baseline every model must beat."""
    p = torch.tensor(click_rate, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return float(-(p * p.log() + (1 - p) * (1 - p).log()))
