"""``synthetic``: a Criteo-shaped dataset with planted cluster structure, generated in chunks.

Why planted clusters: each id's true effect is a latent vector ``centre[cluster(id)] +
noise``. A full table can learn every id; the hashing trick makes unrelated ids share a
row; a method that clusters similar ids (CCE) can recover the structure. So compression
methods differ here the way the papers say they differ on Criteo, in seconds, not days.

Shape: 13 dense features (log-transformed counts, as the Criteo preprocessing writes
them) and 26 categorical ones whose cardinalities are Kaggle's scaled so that the largest
is ``max_cardinality``; ids follow a Zipf law (frequency rank shuffled against the id);
labels are Bernoulli of a logistic model of dense features, per-id latent effects and
pairwise latent interactions, with a bias fitted so the click rate is about ``ctr``.

Everything is a function of ``seed`` and the size arguments; rows are generated chunk by
chunk (memory bounded by ``chunk_rows``) and written in the processed format.

Example::

    build("data/processed/synthetic", rows=4_000_000)   # well under a minute on 2 cores
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

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


def scaled_cardinalities(max_cardinality: int) -> list[int]:
    """Kaggle's cardinalities scaled so the largest is ``max_cardinality``.

    Small features keep their size (a feature with 3 values stays 3) but a scaled one
    never drops below min(original, 16), so the order of sizes is kept.
    """
    scale = max_cardinality / max(KAGGLE_CARDINALITIES)
    return [max(int(round(n * scale)), min(n, 16)) for n in KAGGLE_CARDINALITIES]


class _World:
    """The hidden parameters of the generator (latents, clusters, weights)."""

    def __init__(self, cardinalities, latent_dim, clusters, cluster_noise, zipf_exponent, seed):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self.cdfs, self.rank_to_id, self.latents, self.cluster_of = [], [], [], []
        for n in cardinalities:
            weights = 1.0 / np.arange(1, n + 1) ** zipf_exponent
            self.cdfs.append(np.cumsum(weights) / weights.sum())
            self.rank_to_id.append(rng.permutation(n).astype(np.int32))
            k = min(clusters, n)
            centres = rng.standard_normal((k, latent_dim)).astype(np.float32)
            cluster = rng.integers(0, k, size=n)
            noise = rng.standard_normal((n, latent_dim)).astype(np.float32) * cluster_noise
            self.latents.append((centres[cluster] + noise) / np.sqrt(latent_dim))
            self.cluster_of.append(cluster.astype(np.int32))
        self.dense_mu = rng.uniform(0.0, 3.0, NUM_DENSE)
        self.dense_w = rng.standard_normal(NUM_DENSE) * 0.3
        self.feature_w = rng.standard_normal((NUM_SPARSE, latent_dim)).astype(np.float32)
        # a fixed partner for each feature: pairwise interactions <u_f, u_partner(f)>
        self.partner = rng.permutation(NUM_SPARSE)
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


def build(
    path: str | Path,
    rows: int = 4_000_000,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    max_cardinality: int = 100_000,
    latent_dim: int = 8,
    clusters: int = 32,
    cluster_noise: float = 0.3,
    zipf_exponent: float = 1.05,
    ctr: float = 0.25,
    seed: int = 0,
    chunk_rows: int = 262_144,
    progress: bool = True,
) -> Path:
    """Generates the dataset into ``path`` (processed format) unless it is already there.

    An existing folder whose ``meta.json`` records the same arguments is reused; one with
    other arguments, or an unfinished one, is rebuilt. Writing goes to ``<path>.tmp`` and is
    renamed at the end, so an interrupted build never looks finished.
    """
    path = Path(path)
    params = dict(
        rows=rows, val_fraction=val_fraction, test_fraction=test_fraction,
        max_cardinality=max_cardinality, latent_dim=latent_dim, clusters=clusters,
        cluster_noise=cluster_noise, zipf_exponent=zipf_exponent, ctr=ctr, seed=seed,
    )
    meta_path = path / META_FILE
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("generator") == params:
        return path

    start = time.time()
    cards = scaled_cardinalities(max_cardinality)
    world = _World(cards, latent_dim, clusters, cluster_noise, zipf_exponent, seed)
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
        "seconds": round(time.time() - start, 2),
    })
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(path)
    return path


def planted_clusters(max_cardinality: int = 100_000, latent_dim: int = 8, clusters: int = 32,
                     cluster_noise: float = 0.3, zipf_exponent: float = 1.05, seed: int = 0, **_):
    """The true cluster of every id, per feature (for tests of clustering methods)."""
    cards = scaled_cardinalities(max_cardinality)
    return _World(cards, latent_dim, clusters, cluster_noise, zipf_exponent, seed).cluster_of
