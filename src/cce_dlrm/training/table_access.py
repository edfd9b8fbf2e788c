"""Reading and writing whole embedding tables under DistributedModelParallel.

Under DMP a sharded table's weight in ``state_dict()`` is a ShardedTensor whose
``local_shards()`` carry their row/column offsets and are views of the fused kernel's
storage: writing into them changes the next lookup (checked with torchrec 1.8, CPU and
gloo, table-wise and column-wise). A data-parallel table is a plain, replicated tensor.

Both operations are collective: every rank calls them for the same table, in the same
order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from cce_dlrm.embeddings.base import TableAccess, TableMethod, fill_uniform_shard


class ShardedTableAccess(TableAccess):
    """``read``/``write`` of sub-tables of the TableMethod at ``prefix`` inside a DMP model."""

    def __init__(self, model: nn.Module, prefix: str, method: TableMethod, device: torch.device,
                 optimizer=None):
        self._model = model
        self._optimizer = optimizer
        self._prefix = f"{prefix}.ebc.embedding_bags." if prefix else "ebc.embedding_bags."
        self._shapes = {t.name: (t.rows, t.dim) for t in method.sub_tables}
        self._device = device
        self._weights: dict[str, object] | None = None

    def _weight(self, name: str):
        if self._weights is None:
            state = self._model.state_dict()
            self._weights = {
                key[len(self._prefix):-len(".weight")]: value
                for key, value in state.items()
                if key.startswith(self._prefix) and key.endswith(".weight")
            }
        return self._weights[name]

    def local_shards(self, name: str) -> list[tuple[torch.Tensor, int, int]]:
        """(view, row offset, column offset) of every piece of the table held by this rank."""
        weight = self._weight(name)
        if isinstance(weight, ShardedTensor):
            return [(s.tensor, s.metadata.shard_offsets[0], s.metadata.shard_offsets[1])
                    for s in weight.local_shards()]
        return [(weight, 0, 0)]

    def is_replicated(self, name: str) -> bool:
        return not isinstance(self._weight(name), ShardedTensor)

    def read(self, name: str) -> torch.Tensor:
        rows, dim = self._shapes[name]
        full = torch.zeros(rows, dim, device=self._device)
        for view, r0, c0 in self.local_shards(name):
            full[r0 : r0 + view.shape[0], c0 : c0 + view.shape[1]] = view.detach().to(self._device)
        if not self.is_replicated(name) and dist.is_initialized() and dist.get_world_size() > 1:
            # every element is owned by exactly one rank, the others hold zeros there
            dist.all_reduce(full)
        return full.cpu()

    def write(self, name: str, value: torch.Tensor) -> None:
        with torch.no_grad():
            for view, r0, c0 in self.local_shards(name):
                view.copy_(value[r0 : r0 + view.shape[0], c0 : c0 + view.shape[1]].to(view.device))

    def reset_optimizer_state(self, names: list[str]) -> None:
        """Zeroes every per-row state tensor the optimizer keeps for the tables ``names`` (fbgemm's
        fused ``momentum1`` shards of a sharded table, torchrec's ``sum`` of a data-parallel
        one), as for a table that starts training; step counters are left alone. In place:
        both are views of the optimizer's own state. Nothing to do under SGD."""
        if self._optimizer is None:
            return
        wanted = set(names)
        with torch.no_grad():  # one state_dict for all of them: it builds every table's entry
            for key, entry in self._optimizer.state_dict()["state"].items():
                if ".embedding_bags." not in key or key.rsplit(".", 2)[-2] not in wanted:
                    continue
                for field, value in entry.items():
                    if field == "step":
                        continue
                    if isinstance(value, ShardedTensor):
                        for shard in value.local_shards():
                            shard.tensor.zero_()
                    elif isinstance(value, torch.Tensor):
                        value.zero_()

    def reset(self, method: TableMethod) -> None:
        """The deterministic init of every sub-table, written shard by shard."""
        for t in method.sub_tables:
            for view, r0, c0 in self.local_shards(t.name):
                if view.device.type == "cpu":
                    fill_uniform_shard(view, method.seed, t.name, r0, c0, t.dim, t.init_std, t.init_mean)
                else:
                    # the generator runs on the CPU so every device draws the same numbers
                    host = torch.empty(view.shape, dtype=view.dtype)
                    fill_uniform_shard(host, method.seed, t.name, r0, c0, t.dim, t.init_std, t.init_mean)
                    view.data.copy_(host.to(view.device))
