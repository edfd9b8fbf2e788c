"""Raw input files: plain or gzip, read in chunks of whole lines, counted, fingerprinted.

A chunk ends at the last newline before ``chunk_bytes`` of the (decompressed) stream, so
the same file and chunk size always give the same chunks, and a resumed run can start
reading at the end of the last chunk it has.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from cce_dlrm.data.criteo.errors import CriteoInputError

GZIP_MAGIC = b"\x1f\x8b"
READ_BLOCK = 8 << 20  # buffer of the line count and of skipping through a gzip stream
FINGERPRINT_SPAN = 1 << 20  # bytes hashed at each end of a file


def count_newlines(buf, size: int, step: int = 1 << 20) -> int:
    """Newlines in ``buf[:size]``: a SIMD compare-and-count per MiB is several times faster
    than bytes.count, and the MiB temporary is reused by the allocator."""
    view = np.frombuffer(buf, np.uint8, count=size)
    return sum(int(np.count_nonzero(view[i:i + step] == 10)) for i in range(0, size, step))


def is_gzip(path: Path) -> bool:
    """By content, not by name: a ``.gz`` that is really plain text still reads."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def fingerprint(path: Path) -> dict:
    """Size plus sha256 of the first and last MiB: cheap even for a 50 GB day, and it
    changes when a file is replaced, re-downloaded, truncated or appended to."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_SPAN))
        if size > FINGERPRINT_SPAN:
            f.seek(max(FINGERPRINT_SPAN, size - FINGERPRINT_SPAN))
            h.update(f.read())
    return {"name": path.name, "size": size, "sha256_ends": h.hexdigest()}


class _RawStream:
    """Reads the decompressed bytes of a plain or gzip file into caller-owned buffers.

    ``truncated`` becomes True when a gzip stream ends before its end marker (a damaged
    download): the bytes decoded so far are kept and the caller decides what to do.
    ``position`` is how far into the file on disk reading has got (for progress bars).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._gzip = self._file.read(2) == GZIP_MAGIC
        self._file.seek(0)
        self._stream: BinaryIO = gzip.GzipFile(fileobj=self._file) if self._gzip else self._file
        self.truncated = False

    @property
    def position(self) -> int:
        return self._file.tell()

    def readinto(self, view: memoryview) -> int:
        """Fills ``view`` as far as the data goes; 0 at the end (or where a gzip breaks)."""
        if self.truncated:
            return 0
        if not self._gzip:
            got = 0
            while got < len(view):
                n = self._file.readinto(view[got:])
                if not n:
                    break
                got += n
            return got
        got = 0
        while got < len(view):
            try:
                # one decompression step at a time, so the bytes decoded before a truncation
                # point are kept when the next step raises
                n = self._stream.readinto1(view[got:])
            except EOFError:
                self.truncated = True
                break
            except (zlib.error, gzip.BadGzipFile) as err:
                problem = f"corrupt gzip data ({err}); download the file again"
                raise CriteoInputError(self.path.name, None, problem) from err
            if not n:
                break
            got += n
        return got

    def skip(self, n: int) -> None:
        """Moves ``n`` decompressed bytes forward (a seek for plain files)."""
        if not self._gzip:
            self._file.seek(n, io.SEEK_CUR)
            return
        scratch = memoryview(bytearray(min(n, READ_BLOCK) or 1))
        while n > 0:
            got = self.readinto(scratch[:min(n, len(scratch))])
            if not got:
                break
            n -= got

    def close(self) -> None:
        self._stream.close()
        self._file.close()


@dataclass
class LineChunk:
    """Whole lines of one file: ``buffer[:size]``, ending with a newline (one is added to
    a final line that lacks it, and ``unterminated`` says so). Lines are numbered from 0.
    An empty buffer makes it a description of the chunk only (what passes between
    processes when the receiver can read the bytes from the file itself)."""

    index: int  # chunk number within the file
    buffer: bytearray
    size: int
    first_line: int
    n_lines: int
    start: int  # byte offset of the chunk in the decompressed stream
    end: int
    unterminated: bool = False
    # set on the last chunk when a gzip stream breaks off: the partial line after the last
    # newline (b"" if the break fell on a line boundary); it is not part of the chunk.
    truncated_tail: bytes | None = None

    @property
    def data(self) -> memoryview:
        return memoryview(self.buffer)[:self.size]

    def contains(self, needle: bytes) -> bool:
        return self.buffer.find(needle, 0, self.size) >= 0


def read_range(path: Path | str, start: int, end: int, add_newline: bool = False) -> bytearray:
    """Bytes [start, end) of a plain file (plus a newline if asked), for a worker."""
    data = bytearray(end - start + add_newline)
    with open(path, "rb") as f:
        f.seek(start)
        f.readinto(memoryview(data)[:end - start])
    if add_newline:
        data[-1] = 10
    return data


def _copied(buf: bytearray, used: int, size: int) -> bytearray:
    """A new buffer of ``size`` bytes starting with ``buf[:used]`` (never resized in place:
    views of the old one may still exist)."""
    new = bytearray(size)
    new[:used] = memoryview(buf)[:used]
    return new


def iter_line_chunks(path: Path, chunk_bytes: int, start: int = 0, first_line: int = 0,
                     first_index: int = 0, progress=None,
                     reuse_buffer: bool = False) -> Iterator[LineChunk]:
    """Yields the file's lines in chunks of about ``chunk_bytes`` bytes, from byte ``start``
    of the decompressed stream (which must be a chunk boundary from an earlier pass).

    ``progress`` (optional) is called with the number of bytes of the file on disk read
    since the previous call. With ``reuse_buffer`` every chunk is read into the same
    buffer (no fresh memory to fault in per chunk), so a chunk is valid only until the
    next one is requested.
    """
    path = Path(path)
    stream = _RawStream(path)
    max_line = max(4 * chunk_bytes, 64 << 20)
    try:
        stream.skip(start)
        last_pos = stream.position
        buf, used = bytearray(chunk_bytes), 0  # buf[:used] holds the lines not yet yielded
        offset, line, index = start, first_line, first_index
        while True:
            # fill up to one chunk, or (a line longer than that) to twice what is held
            target = chunk_bytes if used < chunk_bytes else 2 * used
            if target > len(buf):
                if used > max_line:
                    raise CriteoInputError(path.name, line + 1, f"line longer than {used:,} bytes")
                buf = _copied(buf, used, target)
            got = stream.readinto(memoryview(buf)[used:target])
            if progress is not None:
                progress(stream.position - last_pos)
                last_pos = stream.position
            if not got:
                break
            used += got
            cut = buf.rfind(b"\n", 0, used) + 1
            if used < target or cut == 0:
                continue
            n = count_newlines(buf, cut)
            yield LineChunk(index, buf, cut, line, n, offset, offset + cut)
            index, line, offset = index + 1, line + n, offset + cut
            rest = buf[cut:used]
            if not reuse_buffer:
                buf = bytearray(max(chunk_bytes, len(rest)))
            buf[:len(rest)] = rest
            used = len(rest)
        tail = None
        if stream.truncated:
            # a complete-looking last line could still be cut inside a field; everything
            # after the last newline is the partial row
            cut = buf.rfind(b"\n", 0, used) + 1
            tail, used = bytes(buf[cut:used]), cut
        if used or tail is not None:
            size = used
            unterminated = used > 0 and buf[used - 1] != 10
            if unterminated:
                if used == len(buf):
                    buf = _copied(buf, used, used + 1)
                buf[used] = 10
                size += 1
            n = count_newlines(buf, size)
            yield LineChunk(index, buf, size, line, n, offset, offset + used, unterminated, tail)
    finally:
        stream.close()


@dataclass
class LineCount:
    lines: int  # including a final line without newline and a partial line of a broken gzip
    truncated: bool  # gzip stream broke off
    unterminated: bool  # the data does not end with a newline

    @property
    def break_line(self) -> int:
        """1-based number of the line at which a broken gzip stops."""
        return self.lines if self.unterminated else self.lines + 1


def count_lines(path: Path, progress=None) -> LineCount:
    """Counts lines with buffered reads (no parsing): the row count Kaggle's day layout needs."""
    stream = _RawStream(Path(path))
    buf = bytearray(READ_BLOCK)
    try:
        lines, last, last_pos = 0, 10, stream.position
        while True:
            got = stream.readinto(memoryview(buf))
            if progress is not None:
                progress(stream.position - last_pos)
                last_pos = stream.position
            if not got:
                break
            lines += count_newlines(buf, got)
            last = buf[got - 1]
        unterminated = last != 10
        return LineCount(lines + unterminated, stream.truncated, unterminated)
    finally:
        stream.close()


SNIFF_BYTES = 1 << 16  # how much of a file's start is read to recognise its format


def looks_like_csv(path: Path | str) -> str | None:
    """How the start of the file looks like CSV (e.g. ``"comma-separated, header
    'label,I1,I2,...'"``), or None when its first line is not comma-separated text.

    A Criteo row has 39 tabs; a first line with commas and no tab is a CSV export (with
    or without a header row), which would otherwise fail row by row as a bad label.
    """
    stream = _RawStream(Path(path))
    try:
        buf = bytearray(SNIFF_BYTES)
        got = stream.readinto(memoryview(buf))
    finally:
        stream.close()
    first = bytes(buf[:got]).split(b"\n", 1)[0].rstrip(b"\r")
    if b"\t" in first or b"," not in first:
        return None
    fields = first.decode("utf-8", errors="backslashreplace").split(",")
    shown = ",".join(fields[:3]) + (",..." if len(fields) > 3 else "")
    if fields[0].strip().strip('"') in ("0", "1"):  # a data row: there is no header
        return f"comma-separated, no header row, first row '{shown}'"
    return f"comma-separated, header '{shown}'"
