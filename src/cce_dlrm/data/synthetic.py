"""``synthetic``: a Criteo-shaped dataset whose id structure no method is built around.

Shape: 13 dense features (log-transformed counts, as the Criteo preprocessing writes them)
and 26 categorical ones whose cardinalities are Kaggle's scaled so that the largest is
``max_cardinality``. Labels are Bernoulli of a logistic model of the dense features, a
linear read-out of every id's latent vector and pairwise latent interactions between
fixed pairs of features, with a bias fitted so that the click rate is about ``ctr``.

The ids' latent vectors (``structure: hierarchical``, the default). For a feature of ``n``
ids, each id belongs to one sub-group of ``ids_per_subgroup`` ids (4: ``ceil(n/4)``
sub-groups) and each sub-group to one of ``ceil(n ** coarse_exponent)`` coarse groups
(``sqrt(n)``); both assignments are random and balanced. An id's latent vector is::

    sqrt(s_coarse) * C[coarse(id)] + sqrt(s_sub) * S[sub(id)] + sqrt(s_id) * E[id]

with ``C``, ``S``, ``E`` i.i.d. ``N(0, I / latent_dim)`` and the variance shares
``s_coarse, s_sub, s_id`` given by ``variance_weights`` (normalised; default 1:1:1, so a
third of each id's latent variance is shared with its coarse group, a third with its
sub-group only, a third is its own). Every latent vector has expected squared norm 1.
The structure grows with the vocabulary and is finer than any codebook the compared
grids allow: at ``max_cardinality = 1e6`` the largest feature has 250,000 sub-groups and
1,000 coarse groups, while the largest ``k`` of any grid is 10,000 (PQ at cap 1.6e5,
d = 16). A method can exploit the coarse level, part of the sub-group level, never all.

``structure: none`` (the control, ``dataset=synthetic_control``): every id's latent vector
is independent ``N(0, I / latent_dim)``; vocabularies, id frequencies, label model (the
same weights and pairs) and the click-rate target are those of the hierarchical data with
the same seed.

Frequencies: per feature a Zipf law over the ``n`` ids (probability of the ``r``-th most
frequent id proportional to ``r ** -zipf_exponent``, rank shuffled against the id). With
the defaults (4M rows, max_cardinality 1e6, about Kaggle's rows per id of its largest
feature, exponent 1.0) most ids of the large features are seen once or never, as on
Criteo Kaggle (``scripts/data_stats.py`` sets these statistics beside real Kaggle rows).
Unlike Criteo Kaggle, a full table does *not* overfit after one epoch on this data under
plain SGD: ``make overfitting`` (``results/overfitting/``) measured its validation BCE still
falling, if barely, at the end of epoch 3 (3 seeds), on the default data and on a small
instance. Under row-wise Adagrad both do: full's validation BCE is lowest at the end of
epoch 1 and rises after it (``experiment=overfitting``, ``experiment=overfitting_small``,
``tests/test_overfitting.py``).

Everything is a function of ``seed`` and the size arguments; rows are generated chunk by
chunk (memory bounded by ``chunk_rows`` besides the per-id latents) and written in the
processed format.

Example::

    build("data/processed/synthetic", rows=4_000_000)   # about a minute on 2 cores
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cce_dlrm.embeddings.base import ConfigError
from cce_dlrm.data.processed import (
    META_FILE,
    NUM_DENSE,
    NUM_SPARSE,
    SPLITS,
    SplitWriter,
    write_meta,
)

# Criteo Kaggle cardinalities without frequency threshold (DATA.md).
KAGGLE_CARDINALITIES = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]
STRUCTURES = ("hierarchical", "none")
LEVELS = ("coarse", "subgroup", "id")


def scaled_cardinalities(max_cardinality: int) -> list[int]:
    """Kaggle's cardinalities scaled so the largest is ``max_cardinality``.

    Small features keep their size (a feature with 3 values stays 3) but a scaled one
    never drops below min(original, 16), so the order of sizes is kept.
    """
    scale = max_cardinality / max(KAGGLE_CARDINALITIES)
    return [max(int(round(n * scale)), min(n, 16)) for n in KAGGLE_CARDINALITIES]


def variance_shares(variance_weights: dict) -> dict[str, float]:
    """{coarse, subgroup, id} weights -> shares summing to 1 (ConfigError on bad input)."""
    weights = dict(variance_weights)
    if set(weights) != set(LEVELS) or any(float(w) < 0 for w in weights.values()):
        raise ConfigError(f"synthetic: variance_weights needs non-negative {list(LEVELS)}, got {weights}")
    total = sum(float(w) for w in weights.values())
    if total <= 0:
        raise ConfigError("synthetic: variance_weights sum to 0")
    return {level: float(weights[level]) / total for level in LEVELS}


@dataclass
class Groups:
    """The hierarchy of one feature: sub-group of every id, coarse group of every sub-group."""

    subgroup_of: np.ndarray   # (n,) int32
    coarse_of: np.ndarray     # (subgroups,) int32

    @property
    def coarse_of_id(self) -> np.ndarray:
        return self.coarse_of[self.subgroup_of]


def feature_groups(n: int, ids_per_subgroup: int, coarse_exponent: float,
                   rng: np.random.Generator) -> Groups:
    """Balanced random hierarchy: ``ceil(n / ids_per_subgroup)`` sub-groups of (nearly) equal
    size, each in one of ``ceil(n ** coarse_exponent)`` coarse groups (no more than there
    are sub-groups)."""
    subgroups = math.ceil(n / ids_per_subgroup)
    coarse = min(subgroups, math.ceil(n ** coarse_exponent))
    subgroup_of = (rng.permutation(n) % subgroups).astype(np.int32)
    coarse_of = (rng.permutation(subgroups) % coarse).astype(np.int32)
    return Groups(subgroup_of, coarse_of)


class _World:
    """The hidden parameters of the generator (frequencies, latents, label weights).

    Independent random streams per component, so that the control (``structure="none"``)
    shares the frequencies and the label weights of the hierarchical data with its seed.
    """

    def __init__(self, cardinalities, latent_dim, structure, variance_weights, ids_per_subgroup,
                 coarse_exponent, zipf_exponent, seed):
        if structure not in STRUCTURES:
            raise ConfigError(f"synthetic: structure must be one of {list(STRUCTURES)}, got {structure!r}")
        if ids_per_subgroup < 1 or not 0 < coarse_exponent <= 1:
            raise ConfigError("synthetic: ids_per_subgroup must be >= 1 and coarse_exponent in (0, 1]")
        shares = variance_shares(variance_weights)
        freq_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self.cdfs, self.rank_to_id, self.latents, self.groups = [], [], [], []
        scale = 1.0 / np.sqrt(latent_dim)
        for f, n in enumerate(cardinalities):
            weights = 1.0 / np.arange(1, n + 1) ** zipf_exponent
            self.cdfs.append(np.cumsum(weights) / weights.sum())
            self.rank_to_id.append(freq_rng.permutation(n).astype(np.int32))
            rng = np.random.default_rng(np.random.SeedSequence([seed, 4, f]))
            own = rng.standard_normal((n, latent_dim), dtype=np.float32)
            if structure == "none":
                self.latents.append(own * np.float32(scale))
                self.groups.append(None)
                continue
            groups = feature_groups(n, ids_per_subgroup, coarse_exponent, rng)
            coarse = rng.standard_normal((int(groups.coarse_of.max()) + 1, latent_dim), dtype=np.float32)
            sub = rng.standard_normal((groups.coarse_of.size, latent_dim), dtype=np.float32)
            own *= np.float32(np.sqrt(shares["id"]))
            own += np.float32(np.sqrt(shares["subgroup"])) * sub[groups.subgroup_of]
            own += np.float32(np.sqrt(shares["coarse"])) * coarse[groups.coarse_of_id]
            self.latents.append(own * np.float32(scale))
            self.groups.append(groups)
        label_rng = np.random.default_rng(np.random.SeedSequence([seed, 5]))
        self.dense_mu = label_rng.uniform(0.0, 3.0, NUM_DENSE)
        self.dense_w = label_rng.standard_normal(NUM_DENSE) * 0.3
        self.feature_w = label_rng.standard_normal((NUM_SPARSE, latent_dim)).astype(np.float32)
        # a fixed partner for each feature: pairwise interactions <u_f, u_partner(f)>
        self.partner = label_rng.permutation(NUM_SPARSE)
        self.bias = 0.0

    def chunk(self, rows: int, rng: np.random.Generator):
        """Returns dense (rows, 13) float32, sparse (rows, 26) int32, logits (rows,)."""
        raw = np.exp(rng.normal(self.dense_mu, 1.0, size=(rows, NUM_DENSE))) - 1.0
        dense = np.log1p(np.maximum(raw, 0.0)).astype(np.float32)
        logits = (dense - self.dense_mu) @ self.dense_w
        sparse = np.empty((rows, NUM_SPARSE), dtype=np.int32)
        lat = np.empty((NUM_SPARSE, rows, self.latents[0].shape[1]), dtype=np.float32)
        for f in range(NUM_SPARSE):
            ranks = np.searchsorted(self.cdfs[f], rng.random(rows), side="right")
            ranks = np.minimum(ranks, len(self.cdfs[f]) - 1)
            ids = self.rank_to_id[f][ranks]
            sparse[:, f] = ids
            lat[f] = self.latents[f][ids]
        logits += np.einsum("frl,fl->r", lat, self.feature_w) / np.sqrt(NUM_SPARSE)
        logits += np.einsum("frl,frl->r", lat, lat[self.partner]) * 2.0 / np.sqrt(NUM_SPARSE)
        return dense, sparse, logits + self.bias

    def fit_bias(self, ctr: float, rng: np.random.Generator) -> None:
        """Chooses the bias so that the mean click probability is ``ctr`` (bisection)."""
        _, _, logits = self.chunk(100_000, rng)
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if (1 / (1 + np.exp(-(logits + mid)))).mean() < ctr:
                lo = mid
            else:
                hi = mid
        self.bias = (lo + hi) / 2


DEFAULT_WEIGHTS = {"coarse": 1.0, "subgroup": 1.0, "id": 1.0}


@contextlib.contextmanager
def _build_lock(path: Path):
    """An exclusive lock on ``<path>.lock`` for as long as the block runs."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(
    path: str | Path,
    rows: int = 4_000_000,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    max_cardinality: int = 1_000_000,
    latent_dim: int = 8,
    structure: str = "hierarchical",
    variance_weights: dict | None = None,
    ids_per_subgroup: int = 4,
    coarse_exponent: float = 0.5,
    zipf_exponent: float = 1.0,
    ctr: float = 0.25,
    seed: int = 0,
    chunk_rows: int = 131_072,
    progress: bool = True,
) -> Path:
    """Generates the dataset into ``path`` (processed format) unless it is already there.

    An existing folder whose ``meta.json`` records the same arguments is reused; one with
    other arguments, or an unfinished one, is rebuilt. Writing goes to ``<path>.tmp`` and is
    renamed at the end, so an interrupted build never looks finished.
    """
    path = Path(path)
    weights = dict(DEFAULT_WEIGHTS if variance_weights is None else variance_weights)
    params = dict(
        rows=rows, val_fraction=val_fraction, test_fraction=test_fraction,
        max_cardinality=max_cardinality, latent_dim=latent_dim, structure=structure,
        variance_weights={k: float(v) for k, v in weights.items()},
        ids_per_subgroup=ids_per_subgroup, coarse_exponent=coarse_exponent,
        zipf_exponent=zipf_exponent, ctr=ctr, seed=seed,
    )
    # one builder at a time: parallel sweep jobs (Hydra's joblib launcher) may all find the
    # dataset missing; the others wait and then reuse what the first one wrote
    with _build_lock(path):
        meta_path = path / META_FILE
        if meta_path.is_file() and json.loads(meta_path.read_text()).get("generator") == params:
            return path

        start = time.time()
        cards = scaled_cardinalities(max_cardinality)
        world = _World(cards, latent_dim, structure, weights, ids_per_subgroup, coarse_exponent,
                       zipf_exponent, seed)
        world.fit_bias(ctr, np.random.default_rng(np.random.SeedSequence([seed, 2])))
        n_val, n_test = int(rows * val_fraction), int(rows * test_fraction)
        counts = {"train": rows - n_val - n_test, "val": n_val, "test": n_test}

        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        clicks = 0
        bar = tqdm(total=rows, unit="rows", unit_scale=True, desc=f"generating {path.name}",
                   disable=not progress)
        for split_index, split in enumerate(SPLITS):
            writer = SplitWriter(tmp, split)
            done, chunk_index = 0, 0
            while done < counts[split]:
                n = min(chunk_rows, counts[split] - done)
                rng = np.random.default_rng(np.random.SeedSequence([seed, 3, split_index, chunk_index]))
                dense, sparse, logits = world.chunk(n, rng)
                labels = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.uint8)
                writer.write(dense, sparse, labels)
                clicks += int(labels.sum())
                done += n
                chunk_index += 1
                bar.update(n)
            writer.finish()
        bar.close()
        write_meta(tmp, {
            "dataset": "synthetic",
            "cardinalities": cards,
            "rows": counts,
            "click_rate": clicks / max(rows, 1),
            "generator": params,
            "variance_shares": variance_shares(weights) if structure == "hierarchical" else {"id": 1.0},
            "seconds": round(time.time() - start, 2),
        })
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(path)
        return path


def latent_world(max_cardinality: int = 1_000_000, latent_dim: int = 8, structure: str = "hierarchical",
                 variance_weights: dict | None = None, ids_per_subgroup: int = 4,
                 coarse_exponent: float = 0.5, zipf_exponent: float = 1.0, seed: int = 0, **_) -> _World:
    """The generator's hidden parameters for the given arguments (``build``'s other keys are
    ignored): ``.latents[f]`` (n, latent_dim) and ``.groups[f]`` (None for ``structure=none``)."""
    cards = scaled_cardinalities(max_cardinality)
    weights = dict(DEFAULT_WEIGHTS if variance_weights is None else variance_weights)
    return _World(cards, latent_dim, structure, weights, ids_per_subgroup, coarse_exponent,
                  zipf_exponent, seed)
