"""Process group, device and DistributedModelParallel: the one place that decides sharding.

One code path serves 1 process and many: a plain ``python -m cce_dlrm.train`` runs a
process group of size 1; ``torchrun --nproc_per_node=N`` runs N. The CPU/GPU differences
are exactly these, all in this file: the device (``cuda:<local rank>`` or ``cpu``), the
collective backend (NCCL or gloo) and the planner's compute device; row-wise sharding is
refused on CPU because fbgemm implements it only for CUDA.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.types import ShardingType
import torchrec.optim as trec_optim
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from cce_dlrm.embeddings.base import ConfigError, EmbeddingMethod

log = logging.getLogger(__name__)

SHARDING_TYPES = {
    "auto": None,
    "table_wise": ShardingType.TABLE_WISE.value,
    "column_wise": ShardingType.COLUMN_WISE.value,
    "table_column_wise": ShardingType.TABLE_COLUMN_WISE.value,
    "row_wise": ShardingType.ROW_WISE.value,
    "data_parallel": ShardingType.DATA_PARALLEL.value,
}


# trainer.optimizer -> (optimizer for the tables, for every other parameter, their settings
# besides lr). torchrec maps the table one to fbgemm's fused kernel (EXACT_SGD,
# EXACT_ROWWISE_ADAGRAD) for sharded tables; data-parallel tables are plain parameters trained
# by the same class in Python (torchrec.optim.RowWiseAdagrad: the same update), so the plan
# does not change the optimizer. eps is fbgemm's default, given to both.
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, torch.optim.SGD, {}),
    "rowwise_adagrad": (trec_optim.RowWiseAdagrad, torch.optim.Adagrad, {"eps": 1e-8}),
}


@dataclass
class Runtime:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CHATTER = ("Sharding spec not found", "[TBE=")


def _drop_library_chatter(record: logging.LogRecord) -> bool:
    return not (record.levelno < logging.ERROR and str(record.msg).startswith(_CHATTER))


def quiet_library_logs() -> None:
    """Silences messages that say nothing actionable about a run of this project.

    * torchrec logs one warning per data-parallel table ("caching params will be ignored");
    * PyTorch warns that fbgemm's dense (data-parallel) lookup has no registered autograd
      kernel; training with data-parallel tables gives the same numbers as table-wise and
      column-wise sharding (tests/test_training.py compares them), so the warning is noise.
    """
    logging.getLogger("torchrec.distributed.utils").setLevel(logging.ERROR)
    # the planner's tables and notes are for torchrec developers; `plan_summary` says what matters
    logging.getLogger("torchrec.distributed.planner").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="torchrec.distributed.planner")
    logging.getLogger("torchrec.distributed.collective_utils").setLevel(logging.WARNING)
    logging.getLogger("torchrec.distributed.embedding_lookup").setLevel(logging.WARNING)
    logging.getLogger("torchrec.distributed.embeddingbag").setLevel(logging.WARNING)
    # managed-collision modules log their internal splits once and every eviction at INFO
    logging.getLogger("torchrec.distributed.mc_modules").setLevel(logging.WARNING)
    logging.getLogger("torchrec.distributed.mc_embedding_modules").setLevel(logging.WARNING)
    # row-wise shards call collectives PyTorch has renamed (torchrec's code, nothing to act on)
    warnings.filterwarnings("ignore", message=".*`torch.distributed.(reduce_scatter_tensor|all_gather_into_tensor)` is deprecated.*")
    # torchrec/fbgemm log these through the root logger, once per table or kernel
    logging.getLogger().addFilter(_drop_library_chatter)
    warnings.filterwarnings("ignore", message=".*dense_embedding_codegen_lookup_function.*")
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*`broadcast_buffers` is deprecated.*")


def init_runtime(device: str = "auto") -> Runtime:
    """Initialises the default process group from torchrun's environment (or a 1-process one)."""
    quiet_library_logs()
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda but no CUDA device is visible; use device=cpu")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif device == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
        if "OMP_NUM_THREADS" not in os.environ:
            # N processes x all cores each oversubscribes the CPU, and OpenMP's spinning
            # threads then make small kernels 10-100x slower: share the cores out.
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    else:
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if not dist.is_initialized():
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        else:
            # a single process without torchrun: a private in-memory store, no port needed
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)
    return Runtime(rank, world_size, local_rank, dev, backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_model(model: nn.Module, runtime: Runtime, sharding_type: str, lr: float,
                optimizer: str = "sgd") -> tuple[nn.Module, CombinedOptimizer]:
    """Wraps ``model`` in DistributedModelParallel and builds the optimizer.

    Embedding tables get fbgemm's fused optimizer (applied in the backward pass, no gradient
    tensors for the tables); everything else (MLPs, non-table method parameters) the dense
    one over DDP (see ``OPTIMIZERS``). Both use ``lr``, as the DLRM reference does. A
    method whose hooks rewrite table rows accepts only SGD (``rewrites_table_rows``).
    A method names its torchrec modules,
    any sharders they need beyond the collection one, and tables whose sharding types torchrec
    restricts (``EmbeddingMethod.table_modules``/``sharders``/``allowed_sharding_types``).
    """
    if sharding_type not in SHARDING_TYPES:
        raise ConfigError(f"sharding_type must be one of {sorted(SHARDING_TYPES)}, got {sharding_type!r}")
    if sharding_type == "row_wise" and runtime.device.type != "cuda":
        raise ConfigError("row_wise sharding needs CUDA (fbgemm has no CPU kernel for it)")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"trainer.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    table_optimizer, dense_optimizer, settings = OPTIMIZERS[optimizer]
    requested = SHARDING_TYPES[sharding_type]
    constraints: dict[str, ParameterConstraints] = {}
    methods = _methods(model)
    for method in methods:
        if optimizer != "sgd" and method.rewrites_table_rows:
            raise ConfigError(f"{type(method).__name__} rewrites table rows during training and does not remap "
                              f"their optimizer state: use trainer.optimizer=sgd, not {optimizer}")
        for module in method.table_modules():
            apply_optimizer_in_backward(table_optimizer, module.parameters(), {"lr": lr, **settings})
        allowed = method.allowed_sharding_types()  # a method's own limits (torchrec's sharders)
        for name in method.table_names():
            types = allowed.get(name, [requested] if requested is not None else None)
            if requested is not None and requested not in types:
                raise ConfigError(f"{type(method).__name__}: table {name} can only be sharded "
                                  f"{' or '.join(types)}, not {sharding_type}; use sharding_type=auto")
            if types is not None:
                constraints[name] = ParameterConstraints(sharding_types=list(types))
    topology = Topology(world_size=runtime.world_size, compute_device=runtime.device.type,
                        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", runtime.world_size)))
    sharders = [s for m in methods for s in m.sharders()] + [EmbeddingBagCollectionSharder()]
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints or None)
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    log.info("sharding plan: %s", plan_summary(plan))
    dmp = DistributedModelParallel(model, device=runtime.device, plan=plan, sharders=sharders)
    rest = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    if optimizer == "sgd":  # one update rule for every parameter
        dense = KeyedOptimizerWrapper(rest, lambda params: torch.optim.SGD(params, lr=lr))
        return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])
    # data-parallel tables are not fused: they keep the tables' optimizer
    names = {name for method in methods for name in method.table_names()}
    tables = {k: p for k, p in rest.items() if k.endswith(".weight") and k.rsplit(".", 2)[-2] in names}
    optimizers = [dmp.fused_optimizer]
    for params, cls in ((tables, table_optimizer), ({k: p for k, p in rest.items() if k not in tables}, dense_optimizer)):
        if params:
            optimizers.append(KeyedOptimizerWrapper(params, lambda ps, cls=cls: cls(ps, lr=lr, **settings)))
    return dmp, CombinedOptimizer(optimizers)


def plan_summary(plan) -> dict[str, int]:
    """How many tables got each sharding type, e.g. {'table_wise': 20, 'data_parallel': 6}."""
    counts: dict[str, int] = {}
    for module_plan in plan.plan.values():
        for param in module_plan.values():
            counts[param.sharding_type] = counts.get(param.sharding_type, 0) + 1
    return counts


def _methods(model: nn.Module) -> list[EmbeddingMethod]:
    return [m for m in model.modules() if isinstance(m, EmbeddingMethod)]


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DMP (and DDP)."""
    inner = getattr(model, "module", model)
    return getattr(inner, "module", inner)
