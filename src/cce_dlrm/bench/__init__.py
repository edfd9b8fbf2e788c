"""``make bench``: one harness for speed, memory and scaling, and one report.

    python -m cce_dlrm.bench --scale small           # or: make bench BENCH_SCALE=small

Sections (each its own module, each runnable alone with ``--sections``):

* ``throughput``: training samples/s of every method (configs/method/) at two caps and two
  batch sizes, as a ratio to torchrec's own DLRM under DistributedModelParallel with full
  tables, on the same batches, interleaved (:mod:`.throughput`); loader + step; the step
  split into forward, backward, optimizer and method hook; a profile of the top operators;
* ``memory``: peak resident memory of one process per method beside the learned and
  auxiliary bytes the method counts (:mod:`.memory`);
* ``scaling``: 1 and 2 processes under DMP, table-wise and column-wise (:mod:`.scaling`);
* ``clustering``: CCE's clustering round against ids and k, and its share of a default
  training run (:mod:`.clustering`);
* ``preprocess``: rows/s and MB/s of ``make preprocess`` against the pyarrow floor and
  torchrec's ``tsv_to_npys`` (:mod:`.preprocess`).

The report is ``results/bench/<host>.md`` with ``<host>.csv`` (every table, long format)
and PNG plots beside it. Model sizes are Criteo Kaggle's 26 vocabularies (33.8M rows), the
ids synthetic with Zipf frequencies: no data files are needed.
"""
