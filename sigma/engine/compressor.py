"""Compressing one file, synchronously, in chunks: the work a compression worker thread does.

`CODECS` names the three algorithms with their level ranges and file extensions.
`compress_file` reads the source `CHUNK_BYTES` at a time, reports progress after every chunk,
checks a thread-safe cancel flag between chunks, writes to a hidden `.part` file beside the
destination and renames it into place only when complete. A cancelled or failed run leaves no
output behind. Nothing here knows about trio; the worker calls it through
`trio.to_thread.run_sync`.
"""

from __future__ import annotations

import bz2
import lzma
import os
import stat
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

CHUNK_BYTES = 256 * 1024
"""Bytes read per step; cancellation and progress are observed between steps."""

Algorithm = Literal["zlib", "lzma", "bz2"]


class StreamCompressor(Protocol):
    """What zlib, lzma and bz2 compressor objects have in common."""

    def compress(self, data: bytes, /) -> bytes:
        """Compress a chunk; may return nothing while the compressor buffers."""
        ...

    def flush(self) -> bytes:
        """Finish the stream and return what was still buffered."""
        ...


@dataclass(frozen=True)
class Codec:
    """One compression algorithm: its level range, default level and output extension."""

    name: Algorithm
    extension: str
    min_level: int
    max_level: int
    default_level: int
    make: Callable[[int], StreamCompressor]


def _zlib(level: int) -> StreamCompressor:
    return zlib.compressobj(level)


def _lzma(level: int) -> StreamCompressor:
    return lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level)


def _bz2(level: int) -> StreamCompressor:
    return bz2.BZ2Compressor(level)


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", "zlib", min_level=0, max_level=9, default_level=6, make=_zlib),
    "lzma": Codec("lzma", "xz", min_level=0, max_level=9, default_level=6, make=_lzma),
    "bz2": Codec("bz2", "bz2", min_level=1, max_level=9, default_level=9, make=_bz2),
}


class CompressionCancelled(Exception):
    """The cancel flag was set; the partial output has been removed."""


ProgressCallback = Callable[[int, int], None]
"""Called with (bytes_in, bytes_out) after every chunk, from the compressing thread."""


def _open_regular_file(path: Path) -> BinaryIO:
    # O_NOFOLLOW: a file swapped for a symlink since it was checked is refused; O_NONBLOCK: a
    # FIFO swapped in cannot block the open, and the S_ISREG check below then refuses it.
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _create_new_file(path: Path) -> BinaryIO:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    return os.fdopen(os.open(path, flags, 0o644), "wb")


def partial_path(destination: Path) -> Path:
    """Where `compress_file` writes before renaming into `destination`."""
    return destination.with_name(f".{destination.name}.part")


def compress_file(
    source: Path,
    destination: Path,
    *,
    codec: Codec,
    level: int,
    cancel: threading.Event,
    on_progress: ProgressCallback,
    chunk_bytes: int | None = None,
) -> int:
    """Compress `source` into `destination`; return the compressed size in bytes.

    `chunk_bytes` defaults to `CHUNK_BYTES`, read at call time.

    Resource handling: both files are closed on every path; the `.part` file is removed unless
    it was renamed into place.

    Error handling: raises `CompressionCancelled` when `cancel` is set between chunks, `OSError`
    when a file cannot be read or written; the destination then does not exist.
    """
    step = chunk_bytes or CHUNK_BYTES
    part = partial_path(destination)
    compressor = codec.make(level)
    bytes_in = bytes_out = 0
    try:
        with _open_regular_file(source) as reader, _create_new_file(part) as writer:
            while chunk := reader.read(step):
                if cancel.is_set():
                    raise CompressionCancelled
                compressed = compressor.compress(chunk)
                writer.write(compressed)
                bytes_in += len(chunk)
                bytes_out += len(compressed)
                on_progress(bytes_in, bytes_out)
            tail = compressor.flush()
            writer.write(tail)
            bytes_out += len(tail)
            writer.flush()
            os.fsync(writer.fileno())
        if cancel.is_set():
            raise CompressionCancelled
        os.replace(part, destination)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    on_progress(bytes_in, bytes_out)
    return bytes_out
