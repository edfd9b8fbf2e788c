"""PQ: quantization after training, its accounting, error that falls with the budget."""

from __future__ import annotations

import faiss
import pytest
import torch
from torchrec import KeyedJaggedTensor

from cce_dlrm.embeddings.base import FeatureSpec, TrainContext
from cce_dlrm.embeddings.pq import PQEmbedding

FEATURES = [FeatureSpec("small", 20), FeatureSpec("big", 5000)]  # small fits every budget below


@pytest.fixture(autouse=True)
def one_thread():
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def make(budget, **kwargs) -> PQEmbedding:
    return PQEmbedding(FEATURES, dim=16, max_table_params=budget, init_std=0.05, seed=0, **kwargs)


def every_id() -> KeyedJaggedTensor:
    ids = torch.stack([torch.arange(5000) % 20, torch.arange(5000)])
    return KeyedJaggedTensor(keys=["small", "big"], values=ids.reshape(-1),
                             lengths=torch.ones(10_000, dtype=torch.int32))


def quantize(method):
    return method.quantize(TrainContext(tables=method.table_access()))


def test_reconstruction_error_falls_as_the_budget_grows():
    errors = []
    for budget in (512, 2048, 8192, 32_768):
        method = make(budget)
        with torch.no_grad():
            before = method(every_id())
            stats = quantize(method)
            after = method(every_id())
        measured = float(((after - before) ** 2).sum() / (before[:, 1] ** 2).sum())
        assert measured == pytest.approx(stats["pq/relative_error"], rel=1e-3)
        errors.append(measured)
    assert all(a > 1.5 * b for a, b in zip(errors, errors[1:])), errors


def test_accounting_before_and_after_quantization():
    method = make(2048)
    assert method.learned_params() == [320, 80_000] and method.aux_bytes() == [0, 0]
    assert method.report_final_only and not method.respects_budget  # a full table while training
    quantize(method)
    # k = floor(2048 / 16) = 128 centroids per column: 128*16 floats, 4 int16 codes per id
    assert method.learned_params() == [320, 2048] and method.aux_bytes() == [0, 5000 * 4 * 2]
    assert method.respects_budget and method.codes.dtype == torch.int16


def test_vectors_are_rebuilt_from_codes_and_full_features_are_untouched():
    method = make(2048)
    small_before = method.ebc.embedding_bags["small__s0c0"].weight.detach().clone()
    quantize(method)
    with torch.no_grad():
        out = method(every_id())
    codes, book = method.codes.long(), method.codebooks
    rebuilt = torch.cat([book[codes[:, j], 4 * j : 4 * j + 4] for j in range(4)], dim=1)
    torch.testing.assert_close(out[:, 1], rebuilt)
    assert torch.equal(method.ebc.embedding_bags["small__s0c0"].weight, small_before)
    # the compressed model is in the buffers: a fresh module loads it
    fresh = make(2048)
    fresh.load_state_dict(method.state_dict())
    assert fresh.quantized and torch.equal(fresh(every_id()), method(every_id()))
