"""Chunked compression and the data-directory guard, synchronously, without trio."""

from __future__ import annotations

import bz2
import lzma
import os
import random
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from sigma.engine.compressor import (
    CODECS,
    CompressionCancelled,
    compress_file,
    partial_path,
)
from sigma.engine.paths import (
    PathRejected,
    ensure_output_dir,
    resolve_data_dir,
    resolve_input_file,
)

DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": zlib.decompress,
    "lzma": lzma.decompress,
    "bz2": bz2.decompress,
}


def sample_bytes(size: int) -> bytes:
    noise = random.Random(7).randbytes(size // 2)
    return (noise + b"sigma " * size)[:size]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return resolve_data_dir(tmp_path / "data")


@pytest.mark.parametrize("algorithm", sorted(CODECS))
def test_round_trip_in_small_chunks(root: Path, algorithm: str) -> None:
    original = sample_bytes(50_000)
    source = root / "in.bin"
    source.write_bytes(original)
    destination = root / "out"
    progress: list[tuple[int, int]] = []

    size = compress_file(
        source,
        destination,
        codec=CODECS[algorithm],
        level=CODECS[algorithm].default_level,
        cancel=threading.Event(),
        on_progress=lambda bytes_in, bytes_out: progress.append((bytes_in, bytes_out)),
        chunk_bytes=4096,
    )

    assert DECOMPRESS[algorithm](destination.read_bytes()) == original
    assert size == destination.stat().st_size
    assert progress[-1] == (len(original), size)
    assert [bytes_in for bytes_in, _ in progress] == sorted(bytes_in for bytes_in, _ in progress)
    assert len(progress) > 10
    assert not partial_path(destination).exists()


def test_cancel_between_chunks_removes_the_partial_output(root: Path) -> None:
    source = root / "in.bin"
    source.write_bytes(sample_bytes(100_000))
    destination = root / "out.zlib"
    cancel = threading.Event()
    seen_partial: list[bool] = []

    def cancel_after_first_chunk(bytes_in: int, bytes_out: int) -> None:
        seen_partial.append(partial_path(destination).exists())
        cancel.set()

    with pytest.raises(CompressionCancelled):
        compress_file(
            source,
            destination,
            codec=CODECS["zlib"],
            level=1,
            cancel=cancel,
            on_progress=cancel_after_first_chunk,
            chunk_bytes=1024,
        )
    assert seen_partial == [True]
    assert sorted(os.listdir(root)) == ["in.bin"]


def test_a_symlinked_source_is_refused_at_open(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    (root / "link").symlink_to(outside)
    with pytest.raises(OSError):
        compress_file(
            root / "link",
            root / "out",
            codec=CODECS["bz2"],
            level=1,
            cancel=threading.Event(),
            on_progress=lambda bytes_in, bytes_out: None,
        )
    assert sorted(os.listdir(root)) == ["link"]


def test_a_fifo_source_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe")
    with pytest.raises(OSError, match="not a regular file"):
        compress_file(
            root / "pipe",
            root / "out",
            codec=CODECS["zlib"],
            level=1,
            cancel=threading.Event(),
            on_progress=lambda bytes_in, bytes_out: None,
        )
    assert sorted(os.listdir(root)) == ["pipe"]


def test_level_ranges_and_defaults() -> None:
    assert (CODECS["zlib"].min_level, CODECS["zlib"].max_level) == (0, 9)
    assert (CODECS["lzma"].min_level, CODECS["lzma"].max_level) == (0, 9)
    assert (CODECS["bz2"].min_level, CODECS["bz2"].max_level) == (1, 9)
    for codec in CODECS.values():
        assert codec.min_level <= codec.default_level <= codec.max_level


def test_resolve_data_dir_creates_it(tmp_path: Path) -> None:
    root = resolve_data_dir(tmp_path / "a" / "b")
    assert root.is_dir()
    assert root == root.resolve()


def test_resolve_input_file_accepts_a_file_inside(root: Path) -> None:
    (root / "sub").mkdir()
    (root / "sub" / "f.txt").write_bytes(b"12345")
    (root / "alias").symlink_to(root / "sub" / "f.txt")
    assert resolve_input_file(root, "sub/f.txt").size_bytes == 5
    assert resolve_input_file(root, "alias").real_path == root / "sub" / "f.txt"
    assert resolve_input_file(root, "./sub//f.txt").real_path == root / "sub" / "f.txt"


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("", "non-empty"),
        ("a\x00b", "non-empty"),
        ("../outside.txt", "'..'"),
        ("sub/../../outside.txt", "'..'"),
        ("/etc/passwd", "absolute"),
        ("escape", "outside the data directory"),
        ("escape_dir/outside.txt", "outside the data directory"),
        ("missing.txt", "no such file"),
        ("sub", "is a directory"),
        ("loop", "cannot be resolved"),
    ],
)
def test_resolve_input_file_refuses(root: Path, tmp_path: Path, relative: str, reason: str) -> None:
    (tmp_path / "outside.txt").write_bytes(b"secret")
    (root / "sub").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside.txt")
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "loop").symlink_to(root / "loop")
    with pytest.raises(PathRejected, match=reason):
        resolve_input_file(root, relative)


def test_resolve_input_file_refuses_an_absolute_path_even_inside(root: Path) -> None:
    (root / "f").write_bytes(b"x")
    with pytest.raises(PathRejected, match="absolute"):
        resolve_input_file(root, str(root / "f"))


def test_ensure_output_dir_refuses_a_symlink_that_leaves(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "compressed").symlink_to(elsewhere)
    with pytest.raises(PathRejected, match="outside"):
        ensure_output_dir(root)


def test_ensure_output_dir_creates_it_inside(root: Path) -> None:
    assert ensure_output_dir(root) == root / "compressed"
    assert ensure_output_dir(root).is_dir()
