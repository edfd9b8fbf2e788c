"""The columns of a raw Criteo row and the kinds of malformed input this pipeline names.

A raw row is 40 tab-separated fields: ``label, I1..I13, C1..C26`` (the names Criteo's
documentation uses; the processed format calls them ``int_0..`` and ``cat_0..``).
"""

from __future__ import annotations

NUM_DENSE = 13
NUM_CATEGORICAL = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_CATEGORICAL
DENSE_COLUMNS = range(1, 1 + NUM_DENSE)
CATEGORICAL_COLUMNS = range(1 + NUM_DENSE, NUM_FIELDS)
FIELD_NAMES = ["label"] + [f"I{i}" for i in range(1, NUM_DENSE + 1)] + [
    f"C{i}" for i in range(1, NUM_CATEGORICAL + 1)
]
# 8 hex digits is 32 bits, the width of Criteo's hashed categories.
MAX_HEX_DIGITS = 8

# Kinds of rows a lenient run skips (and a strict run stops at), as counted in meta.json.
BAD_LABEL = "bad_label"  # label other than 0 or 1 (or empty)
BAD_DENSE = "bad_dense"  # integer field that is not a decimal int64
BAD_CATEGORICAL = "bad_categorical"  # categorical with a non-hex character
LONG_CATEGORICAL = "long_categorical"  # categorical with more than 8 hex digits
TOO_MANY_FIELDS = "too_many_fields"  # more than 40 tab-separated fields
EMPTY_LINE = "empty_line"
# cut-off last line (no final newline), or the partial line where a gzip stream breaks
TRUNCATED_ROW = "truncated_row"
MALFORMED_KINDS = (
    BAD_LABEL, BAD_DENSE, BAD_CATEGORICAL, LONG_CATEGORICAL, TOO_MANY_FIELDS, EMPTY_LINE,
    TRUNCATED_ROW,
)
# Rows skipped on purpose (not malformed): negatives removed by training-split subsampling,
# and rows of any split left out by row_fraction.
SUBSAMPLED_NEGATIVE = "subsampled_negative"
SAMPLED_OUT = "row_fraction_dropped"
