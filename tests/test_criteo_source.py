"""Reading raw files in chunks of whole lines: plain, gzip, broken gzip, odd endings."""

import gzip

import pytest

from cce_dlrm.data.criteo.errors import CriteoInputError
from cce_dlrm.data.criteo.source import count_lines, fingerprint, iter_line_chunks

LINES = [f"{i % 2}\t{i}\t" + "\t".join(["68fd1e64"] * 3) for i in range(500)]
TEXT = ("\n".join(LINES) + "\n").encode()


def _chunks(path, size, **kw):
    return [(c.index, bytes(c.data), c.first_line, c.n_lines, c.start, c.end, c.unterminated,
             c.truncated_tail) for c in iter_line_chunks(path, size, **kw)]


@pytest.mark.parametrize("size", [1024, 4000, 1 << 20])
def test_chunks_cover_the_file_exactly(tmp_path, size):
    path = tmp_path / "f.txt"
    path.write_bytes(TEXT)
    chunks = _chunks(path, size)
    assert b"".join(c[1] for c in chunks) == TEXT
    line = 0
    for index, data, first, n, start, end, unterminated, tail in chunks:
        assert data.endswith(b"\n") and data.count(b"\n") == n and first == line
        assert TEXT[start:end] == data and not unterminated and tail is None
        line += n
    assert line == len(LINES) == count_lines(path).lines
    if size < len(TEXT):
        assert len(chunks) > 1 and all(len(c[1]) <= size for c in chunks)


def test_resume_from_a_chunk_boundary(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(TEXT)
    full = _chunks(path, 2048)
    k = 3
    _, _, first, _, start, _, _, _ = full[k]
    assert _chunks(path, 2048, start=start, first_line=first, first_index=k) == full[k:]


def test_reused_buffer_gives_the_same_chunks(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(TEXT)
    seen = [bytes(c.data) for c in iter_line_chunks(path, 3000, reuse_buffer=True)]
    assert seen == [c[1] for c in _chunks(path, 3000)]


def test_gzip_and_multi_member_gzip(tmp_path):
    plain, gz = tmp_path / "f.txt", tmp_path / "f.txt.gz"
    plain.write_bytes(TEXT)
    half = len(TEXT) // 2
    half = TEXT.rfind(b"\n", 0, half) + 1
    gz.write_bytes(gzip.compress(TEXT[:half]) + gzip.compress(TEXT[half:]))  # 2 members
    assert _chunks(gz, 2048) == _chunks(plain, 2048)
    assert count_lines(gz).lines == len(LINES)


def test_truncated_gzip_keeps_complete_lines(tmp_path):
    path = tmp_path / "f.gz"
    packed = gzip.compress(TEXT)
    path.write_bytes(packed[: len(packed) * 2 // 3])
    chunks = list(iter_line_chunks(path, 2048))
    data = b"".join(bytes(c.data) for c in chunks)
    tail = chunks[-1].truncated_tail
    assert tail is not None and all(c.truncated_tail is None for c in chunks[:-1])
    assert TEXT.startswith(data + tail) and data.endswith(b"\n") and len(data) < len(TEXT)
    counted = count_lines(path)
    assert counted.truncated
    assert counted.lines == data.count(b"\n") + (1 if tail else 0)


def test_corrupt_gzip_is_an_error(tmp_path):
    path = tmp_path / "f.gz"
    packed = bytearray(gzip.compress(TEXT))
    packed[len(packed) // 2: len(packed) // 2 + 64] = bytes(64)
    path.write_bytes(bytes(packed))
    with pytest.raises(CriteoInputError, match="corrupt gzip"):
        list(iter_line_chunks(path, 2048))


def test_last_line_without_newline(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(TEXT[:-1])
    chunks = list(iter_line_chunks(path, 2048))
    assert chunks[-1].unterminated and bytes(chunks[-1].data).endswith(b"\n")
    assert chunks[-1].end == len(TEXT) - 1
    assert sum(c.n_lines for c in chunks) == len(LINES) == count_lines(path).lines


def test_empty_file_and_long_lines(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert list(iter_line_chunks(empty, 1024)) == [] and count_lines(empty).lines == 0
    long = tmp_path / "long.txt"
    text = b"x" * 5000 + b"\n" + b"".join(b"%099d\n" % i for i in range(50))
    long.write_bytes(text)
    chunks = [bytes(c.data) for c in iter_line_chunks(long, 1024)]
    assert b"".join(chunks) == text and chunks[0].startswith(b"x" * 5000 + b"\n")
    assert len(chunks) > 2 and all(len(c) <= 1024 for c in chunks[1:])  # back to the chunk size


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(TEXT)
    a = fingerprint(path)
    path.write_bytes(TEXT[:-2] + b"9\n")  # same size, last byte differs
    b = fingerprint(path)
    path.write_bytes(TEXT + LINES[0].encode() + b"\n")
    c = fingerprint(path)
    assert len({a["sha256_ends"], b["sha256_ends"], c["sha256_ends"]}) == 3
    assert a["size"] == b["size"] != c["size"]
