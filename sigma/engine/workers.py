"""The compression workers ("agents"): a bounded queue feeding `worker_count` worker tasks.

`WorkerPool.submit` puts a job in the queue (a trio memory channel of `QUEUE_CAPACITY` jobs,
without waiting); `WorkerPool.run` starts the workers, each of which takes jobs from its clone of
the receiving end and compresses them in a thread (`trio.to_thread.run_sync`, limited to one
thread per worker). A worker beats its heartbeat every `HEARTBEAT_INTERVAL_S` while idle and after
every chunk while busy. The pool runs until cancelled; on the way out it sets the cancel flag of
every running job, so the threads stop at their next chunk and remove their partial output.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Literal

import structlog
import trio
from pydantic import Field

from sigma.engine.compressor import CODECS, CompressionCancelled, compress_file
from sigma.engine.jobs import Job, JobBook
from sigma.engine.models import Result, Timestamp, utc_now
from sigma.engine.paths import PathRejected, ensure_output_dir, resolve_input_file

log = structlog.get_logger(__name__)

QUEUE_CAPACITY = 1024
"""Jobs waiting for a worker; `submit` refuses more with `QueueFullError`."""

HEARTBEAT_INTERVAL_S = 1.0

WorkerState = Literal["idle", "busy"]


class AgentView(Result):
    """A compression worker as `agents.list` returns it."""

    id: str
    state: WorkerState
    current_job: str | None = Field(description="the id of the job being compressed")
    jobs_done: int = Field(description="jobs this worker finished, whatever their outcome")
    last_heartbeat: Timestamp


class QueueFullError(Exception):
    """The queue already holds `QUEUE_CAPACITY` jobs."""


class Worker:
    """One worker's observable state; its loop lives in `WorkerPool`."""

    def __init__(self, worker_id: str) -> None:
        self.id = worker_id
        self.current_job: Job | None = None
        self.jobs_done = 0
        self._beat_at = utc_now()

    def beat(self) -> None:
        """Record that the worker's loop is alive."""
        self._beat_at = utc_now()

    @property
    def last_heartbeat(self) -> datetime:
        """The later of the loop's last beat and the running job's last progress."""
        if self.current_job is not None:
            _, _, progressed_at = self.current_job.progress.snapshot()
            if progressed_at is not None and progressed_at > self._beat_at:
                return progressed_at
        return self._beat_at

    def view(self) -> AgentView:
        """The worker's wire form."""
        return AgentView(
            id=self.id,
            state="idle" if self.current_job is None else "busy",
            current_job=None if self.current_job is None else self.current_job.id,
            jobs_done=self.jobs_done,
            last_heartbeat=self.last_heartbeat,
        )


class WorkerPool:
    """The job queue and the workers that drain it; see the module docstring."""

    def __init__(
        self,
        *,
        worker_count: int,
        data_root: Path,
        book: JobBook,
        queue_capacity: int = QUEUE_CAPACITY,
    ) -> None:
        self.workers = tuple(Worker(f"worker-{number}") for number in range(1, worker_count + 1))
        self.book = book
        self.data_root = data_root
        self._send_jobs, self._receive_jobs = trio.open_memory_channel[Job](queue_capacity)
        self._thread_limiter = trio.CapacityLimiter(worker_count)

    def submit(self, job: Job) -> None:
        """Queue a job without waiting; `QueueFullError` when the queue is full."""
        try:
            self._send_jobs.send_nowait(job)
        except trio.WouldBlock:
            raise QueueFullError(
                f"{self._send_jobs.statistics().max_buffer_size} jobs queued"
            ) from None
        self.book.add(job)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the workers until cancelled; `started()` once they all wait for jobs.

        Resource handling: owns both ends of the queue and closes them on exit.

        Error handling: a job's failure is recorded on the job and never stops its worker.
        """
        async with self._send_jobs, self._receive_jobs, trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(self._work, worker, self._receive_jobs.clone())
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                for worker in self.workers:
                    if worker.current_job is not None:
                        worker.current_job.cancel_requested.set()

    async def _work(self, worker: Worker, jobs: trio.MemoryReceiveChannel[Job]) -> None:
        async with jobs:
            while True:
                worker.beat()
                job: Job | None = None
                with trio.move_on_after(HEARTBEAT_INTERVAL_S):
                    try:
                        job = await jobs.receive()
                    except trio.EndOfChannel:
                        return
                if job is not None and job.state == "queued":
                    await self._run_job(worker, job)

    async def _run_job(self, worker: Worker, job: Job) -> None:
        job.start(worker.id)
        worker.current_job = job
        log.info("Compression job started", job=job.id, worker=worker.id, path=job.path)
        try:
            await trio.to_thread.run_sync(
                functools.partial(self._compress_in_thread, job), limiter=self._thread_limiter
            )
        except CompressionCancelled:
            job.finish("cancelled")
        except PathRejected as exc:
            job.finish("failed", error=f"path: {exc}")
        except OSError as exc:
            job.finish("failed", error=exc.strerror or str(exc))
        except Exception:
            log.exception("Compression job crashed", job=job.id, worker=worker.id)
            job.finish("failed", error="internal error")
        else:
            job.finish("done")
        finally:
            if not job.is_finished:
                job.finish("cancelled", error="the engine stopped")
            worker.current_job = None
            worker.jobs_done += 1
            worker.beat()
            self.book.prune()
            log.info("Compression job finished", job=job.id, state=job.state, error=job.error)

    def _compress_in_thread(self, job: Job) -> int:
        source = resolve_input_file(self.data_root, job.path)
        output_dir = ensure_output_dir(self.data_root)
        return compress_file(
            source.real_path,
            output_dir / job.output_name,
            codec=CODECS[job.algorithm],
            level=job.level,
            cancel=job.cancel_requested,
            on_progress=job.progress.update,
        )
