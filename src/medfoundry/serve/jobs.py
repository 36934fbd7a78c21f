"""Jobs and the queue that runs them.

A :class:`Job` is a plain record (``job.json`` in its folder ``WORKDIR/jobs/<user>/<id>/``). The
:class:`JobQueue` holds a bounded FIFO and a fixed number of worker threads (default 1: one
prediction at a time, so memory stays bounded however many users upload); a full queue refuses new
jobs (:class:`QueueFullError`) instead of growing. Jobs found queued or running when a server starts
(it stopped mid-way) are marked failed, never silently dropped.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.utils.jsonfile import read_json, write_json

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
STATES = ("queued", "running", "done", "failed")


class QueueFullError(MedfoundryError):
    """The queue holds its maximum of waiting jobs; the client should retry later."""


@dataclass
class Job:
    id: str
    user: str
    model: str
    input_kind: str
    """``"nifti"`` or ``"dicom"`` (a zipped series)."""
    filename: str
    """The upload's name as given by the client (display only; never used as a path)."""
    state: str = "queued"
    progress: float = 0.0
    """0..1 while running; 1 when done."""
    stage: str = "queued"
    error: str | None = None
    """One line: why the job failed."""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    """Download name -> file name inside the job folder (e.g. ``labels.nii.gz``)."""
    class_names: dict[str, str] = field(default_factory=dict)
    """Label id (as a string, JSON keys) -> class name."""
    findings: dict | None = None
    notes: list[str] = field(default_factory=list)
    """Things the user should know (e.g. DICOM SEG unavailable)."""
    timings_s: dict[str, float] = field(default_factory=dict)
    """Seconds per stage: read, predict, write, report."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Job:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobQueue:
    """Jobs by id, a bounded FIFO of queued ids and ``workers`` threads calling ``run(job, folder)``.

    ``run`` does the work and fills ``job.files`` etc.; it may call :meth:`set_progress`. An
    exception fails the job with its message (a :class:`MedfoundryError`: the message as is; any
    other: its type and message, and the traceback in the server log).
    """

    def __init__(
        self,
        jobs_dir: Path,
        run: Callable[[Job, Path], None],
        workers: int = 1,
        max_queue: int = 32,
    ) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._run = run
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=max_queue)
        self._load_existing()
        self._threads = [
            threading.Thread(target=self._work, name=f"medfoundry-job-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def folder(self, job: Job) -> Path:
        return self.jobs_dir / job.user / job.id

    def new_folder(self, user: str, job_id: str) -> Path:
        folder = self.jobs_dir / user / job_id
        folder.mkdir(parents=True)
        return folder

    def check_room(self) -> None:
        """Raise :class:`QueueFullError` when no job could be queued now."""
        if self._queue.full():
            raise QueueFullError(
                f"the job queue is full ({self._queue.maxsize} waiting); retry later"
            )

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its folder already holds its input)."""
        with self._lock:
            self._jobs[job.id] = job
            self._save(job)
        try:
            self._queue.put_nowait(job.id)
        except queue.Full:  # refused: the caller removes its folder; no record is kept
            with self._lock:
                del self._jobs[job.id]
            raise QueueFullError(
                f"the job queue is full ({self._queue.maxsize} waiting); retry later"
            ) from None

    def get(self, user: str, job_id: str) -> Job | None:
        """The job ``job_id`` when it belongs to ``user`` (else None: others' jobs do not exist)."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.user == user else None

    def list(self, user: str) -> list[Job]:
        return sorted(
            (j for j in self._jobs.values() if j.user == user),
            key=lambda j: j.created,
            reverse=True,
        )

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for j in list(self._jobs.values()):
            out[j.state] += 1
        return out

    def set_progress(self, job: Job, fraction: float, stage: str | None = None) -> None:
        job.progress = round(min(max(fraction, 0.0), 1.0), 4)
        if stage is not None:
            job.stage = stage

    def save(self, job: Job) -> None:
        with self._lock:
            self._save(job)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the workers finish their current job, then end them."""
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            job = self._jobs[job_id]
            job.state, job.stage, job.started = "running", "starting", time.time()
            self.save(job)
            try:
                self._run(job, self.folder(job))
            except MedfoundryError as exc:
                self._finish(job, "failed", str(exc).splitlines()[0][:500])
            except Exception as exc:  # noqa: BLE001 - a job's failure must not end the worker
                log.exception("job %s failed", job.id)
                self._finish(job, "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
            else:
                self._finish(job, "done", None)

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job.stage = state
        if state == "done":
            job.progress = 1.0
        self.save(job)

    def _save(self, job: Job) -> None:
        write_json(self.folder(job) / "job.json", job.to_json())

    def _load_existing(self) -> None:
        for path in sorted(self.jobs_dir.glob("*/*/job.json")):
            try:
                job = Job.from_json(read_json(path, "job record"))
            except (MedfoundryError, TypeError) as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            if job.state in ("queued", "running"):
                job.state, job.stage = "failed", "failed"
                job.error = "the server stopped before this job finished; submit it again"
                self._save(job)
            self._jobs[job.id] = job
