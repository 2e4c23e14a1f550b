"""The host methods: `system.status`, `storage.status` and `health`.

Every psutil and filesystem call runs in a worker thread (`trio.to_thread.run_sync`), so a slow
disk never stalls the engine's event loop. Sizes are in bytes, percentages in 0..100.
`cpu_usage` is the CPU use since the previous `system.status` call (since the engine started, for
the first), the way `psutil.cpu_percent(interval=None)` measures it: never a blocking sample.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Literal

import psutil  # type: ignore[import-untyped, unused-ignore]
import trio
from pydantic import Field

from sigma import __version__
from sigma.engine.jsonrpc import Method, Registry
from sigma.engine.models import NoParams, Result


class MemoryUsage(Result):
    """The host's physical memory."""

    total: int = Field(description="bytes")
    used: int = Field(description="bytes")
    percent: float


class DiskUsage(Result):
    """One filesystem's space."""

    total: int = Field(description="bytes")
    used: int = Field(description="bytes")
    free: int = Field(description="bytes")
    percent: float


class SystemStatus(Result):
    """`system.status`: the host's load, memory, the data directory's disk, and this process."""

    cpu_usage: float = Field(description="percent of all CPUs since the previous call")
    cpu_count: int
    memory: MemoryUsage
    disk: DiskUsage = Field(description="the filesystem that holds the data directory")
    load_average: tuple[float, float, float] = Field(description="over 1, 5 and 15 minutes")
    uptime_s: float = Field(description="seconds since the host booted")
    process_count: int
    engine_rss_bytes: int = Field(description="resident memory of the engine's process")


class PathUsage(Result):
    """Space on the filesystem holding `path`; `error` says why the numbers are missing."""

    path: str
    total: int | None = Field(description="bytes")
    used: int | None = Field(description="bytes")
    free: int | None = Field(description="bytes")
    percent: float | None
    error: str | None


class StorageStatus(Result):
    """`storage.status`: the data directory (space and content) and every configured path."""

    data_dir: PathUsage
    file_count: int = Field(description="regular files inside the data directory, recursively")
    file_bytes: int = Field(description="their total size in bytes")
    paths: list[PathUsage] = Field(description="one per `storage_paths` entry, in config order")


class Health(Result):
    """`health`: the engine answers."""

    status: Literal["ok"] = "ok"
    version: str
    uptime_s: float = Field(description="seconds since the engine started")


def _disk_usage(path: Path) -> DiskUsage:
    usage = psutil.disk_usage(str(path))
    return DiskUsage(total=usage.total, used=usage.used, free=usage.free, percent=usage.percent)


def _path_usage(path: Path) -> PathUsage:
    try:
        usage = psutil.disk_usage(str(path))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return PathUsage(
            path=str(path), total=None, used=None, free=None, percent=None, error=reason
        )
    return PathUsage(
        path=str(path),
        total=usage.total,
        used=usage.used,
        free=usage.free,
        percent=usage.percent,
        error=None,
    )


def count_files(root: Path) -> tuple[int, int]:
    """(regular files, their bytes) under `root`, without following symlinks; blocking."""
    count = size = 0
    pending = [root]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                status = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(status.st_mode):
                pending.append(Path(entry.path))
            elif stat.S_ISREG(status.st_mode):
                count += 1
                size += status.st_size
    return count, size


class HostMethods:
    """The handlers of the host methods, bound to the engine's configuration."""

    def __init__(self, *, data_root: Path, storage_paths: tuple[Path, ...]) -> None:
        self._data_root = data_root
        self._storage_paths = storage_paths
        self._started_at = trio.current_time()
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)

    def register(self, registry: Registry) -> None:
        """Add `system.status`, `storage.status` and `health` to `registry`."""
        registry.add(Method("system.status", NoParams, SystemStatus, self.system_status))
        registry.add(Method("storage.status", NoParams, StorageStatus, self.storage_status))
        registry.add(Method("health", NoParams, Health, self.health))

    async def system_status(self, params: NoParams) -> SystemStatus:
        """CPU, memory, load, uptime and process figures of the host, and this process's RSS."""
        return await trio.to_thread.run_sync(self._sample_system)

    async def storage_status(self, params: NoParams) -> StorageStatus:
        """Space on the data directory's filesystem and every storage path; files in data_dir."""
        return await trio.to_thread.run_sync(self._sample_storage)

    async def health(self, params: NoParams) -> Health:
        """The engine is up: its version and how long it has run."""
        uptime_s = trio.current_time() - self._started_at
        return Health(version=__version__, uptime_s=round(uptime_s, 3))

    def _sample_system(self) -> SystemStatus:
        memory = psutil.virtual_memory()
        one, five, fifteen = psutil.getloadavg()
        return SystemStatus(
            cpu_usage=psutil.cpu_percent(interval=None),
            cpu_count=psutil.cpu_count() or 1,
            memory=MemoryUsage(total=memory.total, used=memory.used, percent=memory.percent),
            disk=_disk_usage(self._data_root),
            load_average=(one, five, fifteen),
            uptime_s=round(time.time() - psutil.boot_time(), 3),
            process_count=len(psutil.pids()),
            engine_rss_bytes=self._process.memory_info().rss,
        )

    def _sample_storage(self) -> StorageStatus:
        file_count, file_bytes = count_files(self._data_root)
        return StorageStatus(
            data_dir=_path_usage(self._data_root),
            file_count=file_count,
            file_bytes=file_bytes,
            paths=[_path_usage(path) for path in self._storage_paths],
        )
