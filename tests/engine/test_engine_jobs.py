"""Jobs and the job book as plain objects: life cycle, wire form, listing, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sigma.engine.jobs import Job, JobBook, JobNotFoundError
from sigma.engine.workers import Worker


def make_job(path: str = "dir/file.txt", size_bytes: int = 1000) -> Job:
    return Job(path=path, algorithm="lzma", level=6, size_bytes=size_bytes)


def test_a_new_job_is_queued_and_named_after_its_source() -> None:
    job = make_job()
    view = job.view()
    assert view.state == "queued"
    assert view.output is None
    assert (view.bytes_in, view.bytes_out, view.ratio, view.percent) == (0, 0, 0.0, 0.0)
    assert job.output_name == f"file.txt.{job.id}.xz"
    assert view.created_at.utcoffset() == timedelta(0)


def test_progress_sets_percent_and_ratio() -> None:
    job = make_job(size_bytes=1000)
    job.start("worker-1")
    job.progress.update(250, 50)
    view = job.view()
    assert (view.state, view.worker) == ("running", "worker-1")
    assert (view.percent, view.ratio) == (25.0, 0.2)
    assert view.started_at is not None


def test_done_sets_output_and_full_percent() -> None:
    job = make_job(size_bytes=0)
    job.start("worker-1")
    job.finish("done")
    view = job.view()
    assert view.output == f"compressed/{job.output_name}"
    assert view.percent == 100.0
    assert view.finished_at is not None
    assert job.finished.is_set()


def test_timestamps_serialise_with_an_offset() -> None:
    dumped = make_job().view().model_dump(mode="json")
    assert dumped["created_at"].endswith("+00:00")
    assert dumped["started_at"] is None


def test_cancel_of_a_queued_job_is_immediate() -> None:
    job = make_job()
    job.request_cancel()
    assert job.state == "cancelled"
    assert job.finished.is_set()
    assert not job.cancel_requested.is_set()


def test_cancel_of_a_running_job_asks_the_thread() -> None:
    job = make_job()
    job.start("worker-1")
    job.request_cancel()
    assert job.state == "running"
    assert job.cancel_requested.is_set()


def test_cancel_of_a_finished_job_changes_nothing() -> None:
    job = make_job()
    job.start("worker-1")
    job.finish("failed", error="disk full")
    job.request_cancel()
    assert (job.state, job.error) == ("failed", "disk full")


def test_finish_refuses_an_unfinished_state() -> None:
    with pytest.raises(ValueError, match="not a finished state"):
        make_job().finish("running")


def test_book_lists_newest_first_with_filter_limit_and_total() -> None:
    book = JobBook(max_finished=10)
    jobs = [make_job(f"f{number}") for number in range(4)]
    for job in jobs:
        book.add(job)
    jobs[1].request_cancel()

    listed, total = book.select()
    assert [job.path for job in listed] == ["f3", "f2", "f1", "f0"]
    assert total == 4
    listed, total = book.select(limit=2)
    assert ([job.path for job in listed], total) == (["f3", "f2"], 4)
    listed, total = book.select(state="cancelled")
    assert ([job.path for job in listed], total) == (["f1"], 1)
    assert book.get(jobs[0].id) is jobs[0]


def test_book_get_of_an_unknown_id() -> None:
    with pytest.raises(JobNotFoundError):
        JobBook(max_finished=1).get("nope")


def test_book_keeps_active_jobs_and_the_newest_finished_ones() -> None:
    book = JobBook(max_finished=2)
    active = make_job("active")
    book.add(active)
    finished = []
    for number in range(4):
        job = make_job(f"done{number}")
        book.add(job)
        job.request_cancel()
        finished.append(job)
        book.prune()
    listed, total = book.select()
    assert [job.path for job in listed] == ["done3", "done2", "active"]
    assert total == 3


def test_book_refuses_a_zero_cap() -> None:
    with pytest.raises(ValueError):
        JobBook(max_finished=0)


def test_worker_view_follows_its_job_and_its_progress() -> None:
    worker = Worker("worker-7")
    idle = worker.view()
    assert (idle.state, idle.current_job, idle.jobs_done) == ("idle", None, 0)

    job = make_job()
    job.start(worker.id)
    worker.current_job = job
    job.progress.update(10, 5)
    busy = worker.view()
    assert (busy.state, busy.current_job) == ("busy", job.id)
    assert busy.last_heartbeat >= idle.last_heartbeat
    assert busy.model_dump(mode="json")["last_heartbeat"].endswith("+00:00")
