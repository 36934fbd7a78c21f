"""The job queue: bounded, FIFO, failures recorded, nothing lost across a restart; tokens."""

from __future__ import annotations

import threading
import time

import pytest

from medfoundry import MedfoundryError
from medfoundry.serve.auth import TokenStore
from medfoundry.serve.jobs import Job, JobQueue, QueueFullError, new_job_id


def _job(queue: JobQueue, user="ann") -> Job:
    job = Job(new_job_id(), user, "m", "nifti", "x.nii.gz")
    queue.new_folder(user, job.id)
    return job


def _wait(job: Job, states=("done", "failed")) -> None:
    for _ in range(200):
        if job.state in states:
            return
        time.sleep(0.01)
    raise AssertionError(job)


def test_queue_is_bounded_and_runs_in_order(tmp_path):
    gate, order = threading.Event(), []

    def run(job, folder):
        gate.wait(5)
        order.append(job.id)
        if job.filename == "bad":
            raise MedfoundryError("x.nii.gz: not a volume\nsecond line")

    q = JobQueue(tmp_path / "jobs", run, workers=1, max_queue=2)
    first = _job(q)
    q.submit(first)
    _wait(first, ("running",))  # the worker holds it; the queue is empty again
    waiting = [_job(q), _job(q)]
    waiting[1].filename = "bad"
    for j in waiting:
        q.submit(j)
    with pytest.raises(QueueFullError):
        q.check_room()
    extra = _job(q)
    with pytest.raises(QueueFullError):
        q.submit(extra)
    assert q.get("ann", extra.id) is None
    gate.set()
    for j in waiting:
        _wait(j)
    assert order == [first.id, waiting[0].id, waiting[1].id]
    assert (first.state, waiting[0].state, waiting[1].state) == ("done", "done", "failed")
    assert waiting[1].error == "x.nii.gz: not a volume"  # one line
    assert q.get("bob", first.id) is None and q.get("ann", first.id) is first
    q.stop()


def test_unfinished_jobs_fail_on_restart(tmp_path):
    gate = threading.Event()
    q = JobQueue(tmp_path / "jobs", lambda job, folder: gate.wait(5), workers=1, max_queue=4)
    running, queued = _job(q), _job(q)
    q.submit(running)
    _wait(running, ("running",))
    q.submit(queued)
    again = JobQueue(tmp_path / "jobs", lambda job, folder: None, workers=1)  # a new server
    jobs = {j.id: j for j in again.list("ann")}
    assert set(jobs) == {running.id, queued.id}
    assert all(j.state == "failed" and "stopped" in j.error for j in jobs.values())
    gate.set()
    q.stop()
    again.stop()


def test_tokens_stored_as_hashes_only(tmp_path):
    store = TokenStore(tmp_path)
    admin = store.ensure_admin()
    assert admin and store.ensure_admin() is None  # shown once
    bob = TokenStore(tmp_path).add_user("bob")  # another process adds a user
    text = (tmp_path / "tokens.json").read_text()
    assert admin not in text and bob not in text
    assert (tmp_path / "tokens.json").stat().st_mode & 0o077 == 0
    assert store.user_for(admin) == "admin" and store.user_for(bob) == "bob"
    assert store.user_for("nope") is None and store.user_for("") is None
    with pytest.raises(MedfoundryError, match="user name"):
        store.add_user("../evil")
