"""Keeping compression jobs inside the data directory.

Every path a caller gives is relative to the data directory. `resolve_input_file` refuses an
absolute path, any `..` component, and anything whose real path (symlinks followed) is not inside
the real data directory; it also refuses what does not exist or is not a regular file.
`ensure_output_dir` makes the `compressed/` directory and refuses it if it resolves elsewhere.

These functions touch the filesystem and block: call them from a worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

OUTPUT_DIR_NAME = "compressed"


class PathRejected(ValueError):
    """A caller's path that must not be used; the message is safe to show the caller."""


@dataclass(frozen=True)
class InputFile:
    """A regular file inside the data directory, as resolved when it was checked."""

    real_path: Path
    size_bytes: int


def resolve_data_dir(data_dir: Path) -> Path:
    """Create the data directory when missing and return its real, absolute path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir.resolve(strict=True)


def resolve_input_file(data_root: Path, relative: str) -> InputFile:
    """The regular file `relative` names inside `data_root` (a real path), or `PathRejected`."""
    if not relative or "\x00" in relative:
        raise PathRejected("must be a non-empty path relative to the data directory")
    pure = PurePosixPath(relative)
    if pure.is_absolute():
        raise PathRejected("must be relative to the data directory, not absolute")
    if ".." in pure.parts:
        raise PathRejected("must not contain '..'")
    try:
        real_path = (data_root / pure).resolve(strict=True)
    except FileNotFoundError:
        raise PathRejected("no such file in the data directory") from None
    except (OSError, RuntimeError):
        raise PathRejected(
            "cannot be resolved (a symlink loop or an unreadable directory)"
        ) from None
    if not real_path.is_relative_to(data_root):
        raise PathRejected("resolves outside the data directory")
    try:
        status = real_path.stat()
    except OSError:
        raise PathRejected("cannot be read") from None
    if real_path.is_dir():
        raise PathRejected("is a directory, not a file")
    if not real_path.is_file():
        raise PathRejected("is not a regular file")
    return InputFile(real_path=real_path, size_bytes=status.st_size)


def ensure_output_dir(data_root: Path) -> Path:
    """Create `<data_root>/compressed` and return its real path, which must be inside the root."""
    output_dir = data_root / OUTPUT_DIR_NAME
    output_dir.mkdir(exist_ok=True)
    real_output_dir = output_dir.resolve(strict=True)
    if not real_output_dir.is_relative_to(data_root) or not real_output_dir.is_dir():
        raise PathRejected(f"{OUTPUT_DIR_NAME}/ resolves outside the data directory")
    return real_output_dir
