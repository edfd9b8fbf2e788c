"""How big each ``BENCH_SCALE`` is: repeats, sizes and what is swept.

``full`` is the reported run (Kaggle's vocabularies, every method; sized for 15 minutes on 2
quiet cores); ``small`` checks the harness end to end in a few minutes (vocabularies clipped at
200,000, fewer memory processes, one sharding, one clustering case); ``tiny`` exists for the
test suite (vocabularies clipped at 4,000, four methods: its numbers mean nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Criteo Kaggle's vocabularies with no frequency threshold (docs/DATA.md), 33,762,577 rows.
KAGGLE_CARDINALITIES = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683,
                        8351593, 3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15,
                        286181, 105, 142572]


@dataclass(frozen=True)
class Scale:
    name: str
    vocab_cap: int | None        # each vocabulary clipped to this (None: Kaggle's own)
    caps: tuple[int, ...]        # max_table_params swept
    batches: tuple[int, ...]     # batch sizes swept
    warmup: int                  # untimed steps per contender before timing
    steps: int                   # timed steps per round
    rounds: int                  # interleaved rounds (the median counts)
    data_rows: int               # rows of the Zipf training split written once
    memory_caps: tuple[int, ...]  # caps for the per-method memory processes
    memory_steps: int
    scaling_methods: tuple[str, ...]
    scaling_steps: int
    cluster_cases: tuple[tuple[int, int], ...]   # (ids n, rows k), 4 columns each
    cluster_default_run: bool    # time one real round of CCE at the Kaggle vocabularies
    preprocess_rows: tuple[int, ...]
    preprocess_repeat: int
    methods: tuple[str, ...] | None = None       # None: every configs/method/*.yaml
    profile_steps: int = 10
    memory_methods: tuple[str, ...] | None = None  # None: the same as ``methods``
    scaling_shardings: tuple[str, ...] = ("table_wise", "column_wise")
    preprocess_torchrec: bool = True


SCALES = {
    "tiny": Scale("tiny", vocab_cap=4000, caps=(16_000,), batches=(128,), warmup=1, steps=2,
                  rounds=2, data_rows=4096, memory_caps=(16_000,), memory_steps=2,
                  scaling_methods=("full",), scaling_steps=2,
                  cluster_cases=((20_000, 100),), cluster_default_run=False,
                  preprocess_rows=(2000,), preprocess_repeat=1,
                  methods=("full", "hashing", "cce", "qr"), profile_steps=2,
                  memory_methods=("full",), scaling_shardings=("table_wise",), preprocess_torchrec=False),
    "small": Scale("small", vocab_cap=200_000, caps=(16_000, 160_000), batches=(128, 2048), warmup=1,
                   steps=3, rounds=3, data_rows=16_384, memory_caps=(16_000,), memory_steps=2,
                   scaling_methods=("full",), scaling_steps=3,
                   cluster_cases=((100_000, 1_000),), cluster_default_run=False,
                   preprocess_rows=(100_000,), preprocess_repeat=1, profile_steps=5,
                   memory_methods=("full", "hashing", "cce"), scaling_shardings=("table_wise",)),
    "full": Scale("full", vocab_cap=None, caps=(16_000, 160_000), batches=(128, 2048), warmup=2,
                  steps=6, rounds=5, data_rows=65_536, memory_caps=(16_000,),
                  memory_steps=3, scaling_methods=("full",), scaling_steps=6,
                  cluster_cases=((100_000, 1_000), (1_000_000, 50_000), (10_000_000, 1_000)),
                  cluster_default_run=False, preprocess_rows=(1_000_000, 4_000_000),
                  preprocess_repeat=2, profile_steps=20),
}


def cardinalities(scale: Scale) -> list[int]:
    if scale.vocab_cap is None:
        return list(KAGGLE_CARDINALITIES)
    return [min(c, scale.vocab_cap) for c in KAGGLE_CARDINALITIES]
