"""Compression jobs: their life cycle, their wire form, and the book that keeps them.

A job goes `queued -> running -> done | failed | cancelled`, or `queued -> cancelled` when it is
cancelled before a worker takes it. `Job` is mutated only from the trio thread, except its
`progress` (written by the compressing thread under a lock) and its `cancel_requested` flag (a
`threading.Event`, read by that thread between chunks). `JobBook` is a plain synchronous class:
it keeps every queued and running job, and at most `max_finished` finished ones (oldest dropped
first).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import Literal

import trio
from pydantic import Field

from sigma.engine.compressor import CODECS, Algorithm
from sigma.engine.models import Result, Timestamp, utc_now
from sigma.engine.paths import OUTPUT_DIR_NAME

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED_STATES: frozenset[JobState] = frozenset({"done", "failed", "cancelled"})


class JobView(Result):
    """A compression job as `compression.jobs.*` return it."""

    id: str
    path: str = Field(description="the source file, relative to the data directory")
    algorithm: Algorithm
    level: int
    state: JobState
    output: str | None = Field(
        description="the compressed file, relative to the data directory; set once done"
    )
    size_bytes: int = Field(description="size of the source file when the job was submitted")
    bytes_in: int = Field(description="source bytes compressed so far")
    bytes_out: int = Field(description="compressed bytes written so far")
    ratio: float = Field(description="bytes_out / bytes_in (0.25 = a quarter of the size)")
    percent: float = Field(description="bytes_in / size_bytes, 0..100")
    error: str | None = Field(description="why the job failed or was cancelled by the engine")
    worker: str | None = Field(description="the id of the worker that ran the job")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class Progress:
    """Byte counters written by the compressing thread and read by the trio thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes_in = 0
        self._bytes_out = 0
        self._updated_at: datetime | None = None

    def update(self, bytes_in: int, bytes_out: int) -> None:
        """Record the counters after a chunk (called from the compressing thread)."""
        now = utc_now()
        with self._lock:
            self._bytes_in = bytes_in
            self._bytes_out = bytes_out
            self._updated_at = now

    def snapshot(self) -> tuple[int, int, datetime | None]:
        """(bytes_in, bytes_out, time of the last update) as one consistent reading."""
        with self._lock:
            return self._bytes_in, self._bytes_out, self._updated_at


@dataclass(eq=False)
class Job:
    """One compression job; see the module docstring for which thread touches what."""

    path: str
    algorithm: Algorithm
    level: int
    size_bytes: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = "queued"
    worker: str | None = None
    error: str | None = None
    output: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress = field(default_factory=Progress)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: trio.Event = field(default_factory=trio.Event)

    @property
    def output_name(self) -> str:
        """The output file's name inside `compressed/`: `<source name>.<job id>.<extension>`."""
        source_name = PurePosixPath(self.path).name
        return f"{source_name}.{self.id}.{CODECS[self.algorithm].extension}"

    @property
    def is_finished(self) -> bool:
        """True once the job is done, failed or cancelled."""
        return self.state in FINISHED_STATES

    def start(self, worker_id: str) -> None:
        """A worker took the job."""
        self.state = "running"
        self.worker = worker_id
        self.started_at = utc_now()

    def finish(self, state: JobState, *, error: str | None = None) -> None:
        """The job ended in `state` (done, failed or cancelled); wakes whoever waits on it."""
        if state not in FINISHED_STATES:
            raise ValueError(f"{state!r} is not a finished state")
        self.state = state
        self.error = error
        self.finished_at = utc_now()
        if state == "done":
            self.output = f"{OUTPUT_DIR_NAME}/{self.output_name}"
        self.finished.set()

    def request_cancel(self) -> None:
        """Cancel now if still queued; if running, ask the thread to stop at the next chunk."""
        if self.state == "queued":
            self.finish("cancelled")
        elif self.state == "running":
            self.cancel_requested.set()

    def view(self) -> JobView:
        """The job's wire form, with the progress read now."""
        bytes_in, bytes_out, _ = self.progress.snapshot()
        if self.state == "done":
            percent = 100.0
        elif self.size_bytes:
            percent = min(100.0, 100.0 * bytes_in / self.size_bytes)
        else:
            percent = 0.0
        return JobView(
            id=self.id,
            path=self.path,
            algorithm=self.algorithm,
            level=self.level,
            state=self.state,
            output=self.output,
            size_bytes=self.size_bytes,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            ratio=round(bytes_out / bytes_in, 4) if bytes_in else 0.0,
            percent=round(percent, 2),
            error=self.error,
            worker=self.worker,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


class JobNotFoundError(KeyError):
    """No job with this id is known (never submitted, or finished and since dropped)."""


class JobBook:
    """Every known job by id, in submission order; finished ones are capped at `max_finished`."""

    def __init__(self, max_finished: int) -> None:
        if max_finished < 1:
            raise ValueError("max_finished must be >= 1")
        self.max_finished = max_finished
        self._jobs: dict[str, Job] = {}

    def add(self, job: Job) -> None:
        """Remember a newly submitted job."""
        self._jobs[job.id] = job
        self.prune()

    def get(self, job_id: str) -> Job:
        """The job with this id, or `JobNotFoundError`."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise JobNotFoundError(job_id) from None

    def select(
        self, state: JobState | None = None, limit: int | None = None
    ) -> tuple[list[Job], int]:
        """Jobs newest first, optionally only those in `state`; also how many matched in all."""
        matching = [job for job in reversed(self._jobs.values()) if state in (None, job.state)]
        return matching[:limit] if limit is not None else matching, len(matching)

    def prune(self) -> None:
        """Drop the oldest finished jobs beyond `max_finished`."""
        finished = [job_id for job_id, job in self._jobs.items() if job.is_finished]
        for job_id in finished[: max(0, len(finished) - self.max_finished)]:
            del self._jobs[job_id]

    def __len__(self) -> int:
        return len(self._jobs)
