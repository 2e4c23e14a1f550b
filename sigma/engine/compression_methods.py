"""The compression methods: `agents.list` and `compression.jobs.submit|list|get|cancel`.

Application errors (JSON-RPC codes in -32000..-32099, listed by `rpc.discover`):

- -32001 "Job not found": `get` or `cancel` names an unknown job id; `data` is `{"id": ...}`.
- -32002 "Job queue is full": `submit` while `QUEUE_CAPACITY` jobs already wait.

A bad `path` (absolute, with `..`, resolving outside the data directory through a symlink,
missing, a directory), an unknown algorithm or a level outside the algorithm's range is -32602
invalid params. `cancel` of a queued job cancels it at once; of a running job, it waits up to
`CANCEL_WAIT_S` for the worker to stop and then answers with the job as it is. A finished job is
returned unchanged: `state` tells the outcome.
"""

from __future__ import annotations

import trio
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from sigma.engine.compressor import CODECS, Algorithm
from sigma.engine.jobs import Job, JobNotFoundError, JobState, JobView
from sigma.engine.jsonrpc import ErrorInfo, InvalidParams, Method, Registry, RpcError
from sigma.engine.models import NoParams, Params, Result
from sigma.engine.paths import PathRejected, resolve_input_file
from sigma.engine.workers import AgentView, QueueFullError, WorkerPool

JOB_NOT_FOUND = ErrorInfo(-32001, "Job not found")
QUEUE_FULL = ErrorInfo(-32002, "Job queue is full")

CANCEL_WAIT_S = 5.0
"""How long `cancel` waits for a running job's worker to stop before answering."""

JobId = Field(min_length=1, max_length=64)


class SubmitParams(Params):
    """`compression.jobs.submit`: which file, how."""

    path: str = Field(min_length=1, max_length=4096, description="relative to the data directory")
    algorithm: Algorithm
    level: int | None = Field(
        default=None, description="zlib 0..9, lzma 0..9, bz2 1..9; absent = the default"
    )

    @field_validator("level")
    @classmethod
    def _level_in_algorithm_range(cls, level: int | None, info: ValidationInfo) -> int | None:
        algorithm = info.data.get("algorithm")
        if level is None or algorithm is None:
            return level
        codec = CODECS[algorithm]
        if not codec.min_level <= level <= codec.max_level:
            raise PydanticCustomError(
                "level_out_of_range",
                "must be between {min_level} and {max_level} for {algorithm}",
                {
                    "min_level": codec.min_level,
                    "max_level": codec.max_level,
                    "algorithm": algorithm,
                },
            )
        return level


class ListParams(Params):
    """`compression.jobs.list`: an optional state filter and a page size (newest first)."""

    state: JobState | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class JobIdParams(Params):
    """`compression.jobs.get` and `compression.jobs.cancel`: the job's id."""

    id: str = JobId


class JobList(Result):
    """`compression.jobs.list`: jobs newest first, and how many matched before `limit`."""

    jobs: list[JobView]
    total: int


class AgentList(Result):
    """`agents.list`: every compression worker."""

    agents: list[AgentView]


class CompressionMethods:
    """The handlers of the compression methods, bound to the worker pool."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def register(self, registry: Registry) -> None:
        """Add `agents.list` and the `compression.jobs.*` methods to `registry`."""
        registry.add(Method("agents.list", NoParams, AgentList, self.list_agents))
        registry.add(
            Method("compression.jobs.submit", SubmitParams, JobView, self.submit, (QUEUE_FULL,))
        )
        registry.add(Method("compression.jobs.list", ListParams, JobList, self.list_jobs))
        registry.add(
            Method("compression.jobs.get", JobIdParams, JobView, self.get, (JOB_NOT_FOUND,))
        )
        registry.add(
            Method("compression.jobs.cancel", JobIdParams, JobView, self.cancel, (JOB_NOT_FOUND,))
        )

    async def list_agents(self, params: NoParams) -> AgentList:
        """The compression workers: state, current job, jobs done and last heartbeat."""
        return AgentList(agents=[worker.view() for worker in self._pool.workers])

    async def submit(self, params: SubmitParams) -> JobView:
        """Queue the compression of a file inside the data directory; returns the new job."""
        root = self._pool.data_root
        try:
            source = await trio.to_thread.run_sync(resolve_input_file, root, params.path)
        except PathRejected as exc:
            raise InvalidParams(f"path: {exc}") from None
        codec = CODECS[params.algorithm]
        job = Job(
            path=params.path,
            algorithm=codec.name,
            level=codec.default_level if params.level is None else params.level,
            size_bytes=source.size_bytes,
        )
        try:
            self._pool.submit(job)
        except QueueFullError:
            raise RpcError(QUEUE_FULL.code, QUEUE_FULL.message) from None
        return job.view()

    async def list_jobs(self, params: ListParams) -> JobList:
        """Known jobs, newest first, optionally only those in one state."""
        jobs, total = self._pool.book.select(params.state, params.limit)
        return JobList(jobs=[job.view() for job in jobs], total=total)

    async def get(self, params: JobIdParams) -> JobView:
        """One job, with its progress now."""
        return self._find(params.id).view()

    async def cancel(self, params: JobIdParams) -> JobView:
        """Cancel a queued or running job; answers once it stopped (or after CANCEL_WAIT_S)."""
        job = self._find(params.id)
        job.request_cancel()
        with trio.move_on_after(CANCEL_WAIT_S):
            await job.finished.wait()
        return job.view()

    def _find(self, job_id: str) -> Job:
        try:
            return self._pool.book.get(job_id)
        except JobNotFoundError:
            raise RpcError(JOB_NOT_FOUND.code, JOB_NOT_FOUND.message, {"id": job_id}) from None
