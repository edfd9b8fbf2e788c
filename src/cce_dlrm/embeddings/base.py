"""The embedding-module contract every compression method implements.

An embedding method is a plain ``nn.Module``: ids in, vectors out.

* input: a ``KeyedJaggedTensor`` whose keys are the logical features in order and which
  holds exactly one id per feature per sample (values are key-major, shape ``F * B``);
* output: a dense tensor ``(B, F, d)``, the vector of every feature of every sample;
* accounting: ``learned_params()`` (floats the optimizer updates) and ``aux_bytes()``
  (index maps, codes, hash constants), both per feature and never mixed.

Methods whose learned state is embedding tables derive from :class:`TableMethod`: they
describe, per feature, a grid of sub-tables (``slots`` combined by a reducer, ``columns``
concatenated) and how ids map to rows; the base class builds one torchrec
``EmbeddingBagCollection`` for all of them, so DistributedModelParallel shards every
sub-table and the fused fbgemm optimizer trains it, and the lookup is one fused call.

Initialisation rule (one place, the same for every method): every *composed* vector
starts with i.i.d. coordinates of standard deviation ``init_std``. A method that sums
``s`` slots draws each slot with std ``init_std / sqrt(s)``; one that multiplies them draws
each with std ``init_std ** (1 / s)`` (see :func:`slot_init_std`). Tables are uniform, centred
on ``SubTable.init_mean`` (0 unless a method says otherwise: qr's ``mult`` starts all factors
but the last near 1, see qr.py). Each method module states its rule and its effective step
at init (``scripts/effective_step.py``) in an "Init rule:" paragraph.
"""

from __future__ import annotations

import math
import zlib
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.modules.embedding_configs import DataType

#: ``table_precision`` -> (torchrec data type, bytes per stored float)
TABLE_PRECISIONS = {"fp32": (DataType.FP32, 4), "fp16": (DataType.FP16, 2)}


class ConfigError(ValueError):
    """A configuration that cannot work; the entry point prints it as one line."""


@dataclass(frozen=True)
class FeatureSpec:
    """One categorical feature: its name and the number of ids (``0..num_ids-1``)."""

    name: str
    num_ids: int


def feature_budget(num_ids: int, dim: int, max_table_params: int | None) -> int:
    """``P = min(n*d, max_table_params)``: the learned floats this feature may use."""
    full = num_ids * dim
    return full if max_table_params is None else min(full, int(max_table_params))


def fits_full(num_ids: int, dim: int, max_table_params: int | None) -> bool:
    """A feature whose full table fits the budget stays a full table, whatever the method."""
    return max_table_params is None or num_ids * dim <= int(max_table_params)


def check_columns(method: str, dim: int, columns: int) -> None:
    """Columns must split ``dim`` into widths that fbgemm's fused kernels accept (multiples of 4)."""
    if columns < 1 or dim % columns:
        raise ConfigError(f"{method}: embedding dim {dim} is not divisible by columns={columns}")
    if (dim // columns) % 4:
        raise ConfigError(
            f"{method}: columns={columns} makes sub-tables {dim // columns} wide; fbgemm's fused "
            f"kernels need a multiple of 4 (use columns={max(1, dim // 4)} or fewer)")


def lookup_flat_rows(table: torch.Tensor, ids: torch.Tensor, offsets: torch.Tensor,
                     columns: torch.Tensor) -> torch.Tensor:
    """Rows of per-feature ``d``-wide tables stored back to back in one flat parameter.

    ids (Ff, B); offsets (Ff,) where each feature's table starts (in floats); columns is
    ``arange(d)``. Returns (Ff, B, d). Methods with non-table parameters (dhe, tt) keep the
    features that fit their budget as full tables this way.
    """
    flat = (ids * columns.numel() + offsets.view(-1, 1)).unsqueeze(-1) + columns
    return table.index_select(0, flat.reshape(-1)).view(flat.shape)


def slot_init_std(init_std: float, slots: int, reducer: str) -> float:
    """Std of each slot's entries so that the reduced vector has coordinate std ``init_std``."""
    if reducer == "sum":
        return init_std / math.sqrt(slots)
    if reducer == "prod":
        return init_std ** (1.0 / slots)
    raise ConfigError(f"unknown reducer {reducer!r} (sum or prod)")


class EmbeddingMethod(nn.Module, metaclass=ABCMeta):
    """Base of every method. Subclasses implement ``forward`` and the accounting."""

    def __init__(
        self,
        features: Sequence[FeatureSpec],
        dim: int,
        max_table_params: int | None,
        init_std: float,
        seed: int,
    ):
        super().__init__()
        if dim <= 0:
            raise ConfigError(f"embedding dim must be positive, got {dim}")
        if max_table_params is not None and int(max_table_params) < dim:
            raise ConfigError(
                f"max_table_params={max_table_params} is below the embedding dim {dim}: "
                "not even one vector fits"
            )
        self.features = list(features)
        self.dim = int(dim)
        self.max_table_params = None if max_table_params is None else int(max_table_params)
        self.init_std = float(init_std)
        self.seed = int(seed)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @abstractmethod
    def learned_params(self) -> list[int]:
        """Learned floats per feature."""

    @abstractmethod
    def aux_bytes(self) -> list[int]:
        """Auxiliary (non-learned, stored) bytes per feature."""

    def learned_bytes(self) -> list[int]:
        """Bytes of the learned floats per feature (4 each unless a method stores fewer)."""
        return [4 * n for n in self.learned_params()]

    #: False only for the uncompressed baseline, which ignores ``max_table_params``.
    respects_budget = True

    #: True for methods whose result is defined only after ``on_train_end`` (post-training
    #: quantization): the run then reports the final evaluation, not the best during training.
    report_final_only = False

    #: True for methods whose training hooks write table rows without resetting those rows'
    #: optimizer state (CAFE's migrations). Plain SGD has no per-row state; an optimizer with
    #: per-row state (``trainer.optimizer=rowwise_adagrad``) would keep a rewritten row's stale
    #: accumulator, so these methods refuse it. (CCE rewrites whole tables and resets their
    #: state through ``TableAccess.reset_optimizer_state``.)
    rewrites_table_rows = False

    # --- sharding: what DistributedModelParallel and the fused optimizer need to know -------
    def table_modules(self) -> list[nn.Module]:
        """The torchrec modules holding this method's tables: DMP shards them and the fused
        optimizer trains their parameters (none for a method without torchrec tables)."""
        return []

    def table_names(self) -> list[str]:
        """Names of the tables in ``table_modules()`` (the keys of sharding constraints)."""
        return []

    def sharders(self) -> list:
        """Extra torchrec module sharders the method's ``table_modules()`` need (beyond the
        ``EmbeddingBagCollection`` one every run registers)."""
        return []

    def allowed_sharding_types(self) -> dict[str, list[str]]:
        """Tables whose sharding types are restricted: name -> allowed torchrec sharding types."""
        return {}

    def on_train_step(self, step: int, total_steps: int, context: "TrainContext") -> dict[str, float]:
        """Called after every optimizer step (``step`` counts from 1); dynamic methods act here.

        Returns named scalars to log at this step (empty for static methods).
        """
        return {}

    def on_train_end(self, context: "TrainContext") -> dict[str, float]:
        """Called once after the last step, before the final validation and test."""
        return {}


def _no_log(name: str, value: float, step: int) -> None:
    return None


def _local_broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    return tensor


@dataclass
class TrainContext:
    """What the training loop lends a method during training (see ``on_train_step``).

    ``tables`` reads and writes the method's sub-tables wherever they are sharded (every
    rank calls ``read``/``write`` together: they are collective under model parallelism).
    ``broadcast(tensor, src)`` copies a tensor from rank ``src`` to every rank, in place,
    so that state computed on one rank (cluster maps) ends identical everywhere.
    """

    tables: "TableAccess"
    rank: int = 0
    world_size: int = 1
    #: training batches per epoch (global batches), for schedules counted in epochs
    steps_per_epoch: int = 0
    broadcast: Callable[[torch.Tensor, int], torch.Tensor] = _local_broadcast
    log: Callable[[str, float, int], None] = _no_log


class TableAccess:
    """Reads/writes whole sub-tables of an embedding module, sharded or not.

    The training code provides the distributed implementation; this one serves an
    unsharded ``EmbeddingBagCollection`` (tests, single process without DMP).
    """

    def __init__(self, ebc: nn.Module):
        self._ebc = ebc

    def read(self, name: str) -> torch.Tensor:
        return self._ebc.embedding_bags[name].weight.detach().clone()

    def write(self, name: str, value: torch.Tensor) -> None:
        with torch.no_grad():
            self._ebc.embedding_bags[name].weight.copy_(value)

    def reset_optimizer_state(self, names: list[str]) -> None:
        """Zeroes the optimizer state of rewritten tables (none here: no optimizer is attached)."""


@dataclass(frozen=True)
class FeatureLayout:
    """How one feature's vector is composed from sub-tables.

    ``rows[s][c]`` is the row count of the sub-table in slot ``s`` and column ``c``;
    columns are concatenated (each of width ``dim // columns``), slots are combined by
    ``reducer`` ('sum' or 'prod').
    """

    rows: tuple[tuple[int, ...], ...]
    reducer: str = "sum"

    @property
    def slots(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> int:
        return len(self.rows[0])

    @property
    def shape_key(self) -> tuple[int, int, str]:
        return (self.slots, self.columns, self.reducer if self.slots > 1 else "sum")


@dataclass(frozen=True)
class SubTable:
    name: str
    feature: int
    slot: int
    column: int
    rows: int
    dim: int
    init_std: float
    init_mean: float = 0.0  # centre of the uniform init (qr's mult factors start near 1)


@dataclass
class FeatureGroup:
    """Features that share a layout shape; their index computation is vectorised."""

    key: tuple[int, int, str]
    features: list[int]


def _table_seed(seed: int, table: str, block: int) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(table.encode()) * 7919 + block) % (2**63 - 1)


INIT_BLOCK_ROWS = 1 << 16


def fill_uniform_shard(
    shard: torch.Tensor, seed: int, table: str, row_offset: int, col_offset: int, table_dim: int, std: float,
    mean: float = 0.0,
) -> None:
    """Fills ``shard`` (a view of rows/columns of a table) with the table's deterministic init.

    The values depend only on (seed, table name, row, column), so a table initialised as
    one piece, or as row/column shards on any number of ranks, holds the same numbers.
    """
    half_width = std * math.sqrt(3.0)
    rows = shard.shape[0]
    first, last = row_offset // INIT_BLOCK_ROWS, (row_offset + rows - 1) // INIT_BLOCK_ROWS
    with torch.no_grad():
        for block in range(first, last + 1):
            gen = torch.Generator().manual_seed(_table_seed(seed, table, block))
            values = torch.rand(INIT_BLOCK_ROWS, table_dim, generator=gen)
            values = (values * 2.0 - 1.0) * half_width + mean
            lo = max(row_offset, block * INIT_BLOCK_ROWS)
            hi = min(row_offset + rows, (block + 1) * INIT_BLOCK_ROWS)
            src = values[lo - block * INIT_BLOCK_ROWS : hi - block * INIT_BLOCK_ROWS,
                         col_offset : col_offset + shard.shape[1]]
            shard[lo - row_offset : hi - row_offset].copy_(src.to(shard.dtype))


class TableMethod(EmbeddingMethod):
    """A method whose learned state is a set of torchrec sub-tables (see module docstring).

    Subclasses implement ``layout(index, feature)`` (called once per feature) and
    ``indices(group, ids)``, which maps the ids of a feature group, shape ``(Fg, B)``, to
    rows of every sub-table, shape ``(Fg, slots, columns, B)``, with tensor ops only.
    """

    def __init__(self, features, dim, max_table_params, init_std, seed, device=None):
        super().__init__(features, dim, max_table_params, init_std, seed)
        self.layouts = [self.layout(i, f) for i, f in enumerate(self.features)]
        for i, lay in enumerate(self.layouts):
            if lay.columns > 1:
                check_columns(f"{type(self).__name__} ({self.features[i].name})", self.dim, lay.columns)
            if any(len(r) != lay.columns for r in lay.rows) or lay.slots < 1:
                raise ConfigError(f"feature {self.features[i].name}: ragged layout {lay.rows}")
        groups: dict[tuple, FeatureGroup] = {}
        for i, lay in enumerate(self.layouts):
            groups.setdefault(lay.shape_key, FeatureGroup(lay.shape_key, [])).features.append(i)
        self.groups = list(groups.values())

        self.sub_tables: list[SubTable] = []
        for group in self.groups:
            slots, columns, reducer = group.key
            std = slot_init_std(self.init_std, slots, reducer)
            for f in group.features:
                for s in range(slots):
                    for c in range(columns):
                        self.sub_tables.append(SubTable(
                            name=f"{self.features[f].name}__s{s}c{c}", feature=f, slot=s, column=c,
                            rows=self.layouts[f].rows[s][c], dim=self.dim // columns, init_std=std,
                        ))
        self.sub_keys = [t.name for t in self.sub_tables]
        self.table_precision = "fp32"
        self.ebc = self.make_collection(device)
        # order of the groups' features in the concatenated output; inverse restores F order
        order = [f for g in self.groups for f in g.features]
        self.register_buffer("_inverse_order", torch.argsort(torch.tensor(order)), persistent=False)
        # each group's feature indices, as buffers so that they live on the module's device
        # (a tensor built per step would be a host-to-device copy on a GPU's hot path)
        for n, group in enumerate(self.groups):
            self.register_buffer(f"_group{n}", torch.tensor(group.features), persistent=False)
        self._column_perm: dict[tuple[str, ...], torch.Tensor] = {}
        if device is None or torch.device(device).type != "meta":
            self.reset_parameters()

    # --- what a subclass provides -------------------------------------------------
    @abstractmethod
    def layout(self, index: int, feature: FeatureSpec) -> FeatureLayout:
        """The sub-table grid of one feature (called once per feature, at construction)."""

    def indices(self, group: FeatureGroup, ids: torch.Tensor) -> torch.Tensor:
        """ids (Fg, B) of a feature group -> rows (Fg, slots, columns, B), tensor ops only.

        Used by the default ``forward``; a method that overrides ``forward`` (its own way of
        combining lookups) need not provide it.
        """
        raise TypeError(f"{type(self).__name__} provides neither indices() nor its own forward()")

    # --- shared machinery ---------------------------------------------------------
    def make_collection(self, device=None) -> EmbeddingBagCollection:
        """One torchrec collection of every sub-table, stored in ``self.table_precision``."""
        return EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=t.name, embedding_dim=t.dim, num_embeddings=t.rows,
                    feature_names=[t.name], pooling=PoolingType.SUM,
                    data_type=TABLE_PRECISIONS[self.table_precision][0],
                )
                for t in self.sub_tables
            ],
            device=torch.device(device) if device is not None else None,
        )

    def set_table_precision(self, precision: str) -> None:
        """Stores every sub-table in ``precision`` ('fp32' or 'fp16'); call before sharding.

        fp16 tables are half the bytes; fbgemm's fused kernels read them and return fp32
        vectors, and its fused SGD updates them in place (torchrec asks fbgemm for stochastic
        rounding unless told otherwise).
        """
        if precision not in TABLE_PRECISIONS:
            raise ConfigError(f"table_precision must be one of {sorted(TABLE_PRECISIONS)}, got {precision!r}")
        if precision == self.table_precision:
            return
        device = next(self.ebc.parameters()).device
        self.table_precision = precision
        self.ebc = self.make_collection(device)
        if device.type != "meta":
            TableMethod.reset_parameters(self)

    def group_features(self, group: FeatureGroup) -> torch.Tensor:
        """The group's feature indices, (Fg,) int64 on the module's device."""
        return getattr(self, f"_group{self.groups.index(group)}")

    def init_std_of(self, table: str) -> float:
        return next(t.init_std for t in self.sub_tables if t.name == table)

    def reset_parameters(self) -> None:
        """Deterministic init of every (unsharded) sub-table; sharded ones: see training code."""
        for t in self.sub_tables:
            weight = self.ebc.embedding_bags[t.name].weight
            fill_uniform_shard(weight.data, self.seed, t.name, 0, 0, t.dim, t.init_std, t.init_mean)

    def table_kjt(self, features: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Logical ids -> a KJT over every sub-table (one id each), built with tensor ops."""
        num_features = len(self.features)
        ids = features.values().view(num_features, -1)
        batch = ids.shape[1]
        # the group's rows picked with its index buffer (a Python list index would be a fresh
        # host tensor, copied to the device, every step)
        parts = [self.indices(g, ids.index_select(0, getattr(self, f"_group{n}"))).reshape(-1)
                 for n, g in enumerate(self.groups)]
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        keys = len(self.sub_keys)
        lengths = torch.ones(keys * batch, dtype=torch.int32, device=values.device)
        # one id per sub-table and sample, so the per-key lengths are known here: torchrec then
        # need not sum `lengths` per key and copy the sums to the host (a GPU sync every step)
        return KeyedJaggedTensor(keys=self.sub_keys, values=values, lengths=lengths, stride=batch,
                                 length_per_key=[batch] * keys,
                                 offset_per_key=list(range(0, (keys + 1) * batch, batch)))

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """features: KJT (F keys, one id each) -> (B, F, d)."""
        pooled = self.ebc(self.table_kjt(features))
        keys = tuple(pooled.keys())
        values = pooled.values().float()  # unsharded fp16 tables return fp16 (fbgemm's return fp32)
        if list(keys) != self.sub_keys:
            # a sharded collection may return its tables in another order
            perm = self._column_perm.get(keys)
            if perm is None:
                perm = self._make_column_perm(pooled)
                self._column_perm[keys] = perm
            values = values.index_select(1, perm.to(values.device))
        batch = values.shape[0]
        outs, offset = [], 0
        for group in self.groups:
            slots, columns, reducer = group.key
            width = len(group.features) * slots * self.dim
            block = values[:, offset : offset + width].view(batch, len(group.features), slots, self.dim)
            offset += width
            if slots == 1:
                outs.append(block[:, :, 0])
            elif reducer == "sum":
                outs.append(block.sum(dim=2))
            else:
                outs.append(block.prod(dim=2))
        out = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
        if len(self.groups) > 1:
            out = out.index_select(1, self._inverse_order)
        return out

    def _make_column_perm(self, pooled) -> torch.Tensor:
        starts, pos = {}, 0
        for key, length in zip(pooled.keys(), pooled.length_per_key()):
            starts[key] = (pos, length)
            pos += length
        cols = [torch.arange(starts[k][0], starts[k][0] + starts[k][1]) for k in self.sub_keys]
        return torch.cat(cols)

    def learned_params(self) -> list[int]:
        out = [0] * len(self.features)
        for t in self.sub_tables:
            out[t.feature] += t.rows * t.dim
        return out

    def learned_bytes(self) -> list[int]:
        """Sub-table floats at ``table_precision``'s size, other learned floats at 4 bytes."""
        size = TABLE_PRECISIONS[self.table_precision][1]
        tables = [0] * len(self.features)
        for t in self.sub_tables:
            tables[t.feature] += t.rows * t.dim
        return [size * n + 4 * (total - n) for n, total in zip(tables, self.learned_params())]

    def aux_bytes(self) -> list[int]:
        """Hash constants held by the method (buffers), spread over features."""
        # the method's own buffers only: not the collection's (under DMP, the sharded
        # collection holds bookkeeping buffers of its own) nor private derived ones ("_...")
        total = sum(b.numel() * b.element_size() for n, b in self.named_buffers()
                    if not n.startswith(("_", "ebc.")))
        per = total // max(len(self.features), 1)
        return [per] * len(self.features)

    def table_access(self) -> TableAccess:
        return TableAccess(self.ebc)

    def table_modules(self) -> list[nn.Module]:
        return [self.ebc]

    def table_names(self) -> list[str]:
        return list(self.sub_keys)


def iter_sub_tables(module: nn.Module) -> Iterator[tuple[str, TableMethod]]:
    """(prefix, method) for every TableMethod inside ``module``."""
    for name, sub in module.named_modules():
        if isinstance(sub, TableMethod):
            yield name, sub
