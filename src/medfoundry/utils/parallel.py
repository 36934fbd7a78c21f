"""One helper to map a function over work items in worker processes, with a progress bar.

What it guarantees, because tools like this run unattended over thousands of files:

* an exception raised in a worker is raised in the caller, whatever it is: the worker sends it back
  pickled, or (when it cannot be pickled) as a ``RuntimeError`` with its type and message, so the
  caller never waits for a result that cannot arrive;
* a worker that dies (killed by the kernel for memory, a crash in a C library) is an error in the
  caller (``BrokenProcessPool``), not a hang;
* on Ctrl-C or SIGTERM the caller stops the workers; workers leave quietly (no traceback per worker)
  and die with the caller if it is killed outright.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def map_with_progress(
    fn: Callable[[Any], T], items: list, jobs: int = 1, desc: str = "", progress: bool = True
) -> Iterator[T]:
    """Yield ``fn(item)`` for each item, in order, using ``jobs`` processes (1: in this process).

    At most ``2 * jobs`` items are in flight, so memory stays bounded whatever the number of items.
    """
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="case", leave=False)
    try:
        if jobs <= 1 or len(items) <= 1:
            for item in items:
                r = fn(item)
                bar.update()
                yield r
            return
        for r in _map_in_workers(fn, items, min(jobs, len(items))):
            bar.update()
            yield r
    finally:
        bar.close()


def _map_in_workers(fn: Callable[[Any], T], items: list, jobs: int) -> Iterator[T]:
    pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"), initializer=_worker_init)
    pending: deque[Future] = deque()
    todo = iter(items)
    try:
        for item in todo:
            pending.append(pool.submit(_call, fn, item))
            if len(pending) >= 2 * jobs:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
    finally:
        _stop(pool, pending)


def _result(future: Future) -> Any:
    ok, value = future.result()
    if ok:
        return value
    raise pickle.loads(value)


def _call(fn: Callable[[Any], T], item: Any) -> tuple[bool, Any]:
    """Run in a worker: ``(True, result)`` or ``(False, pickled exception)``."""
    try:
        return True, fn(item)
    except Exception as exc:  # noqa: BLE001 - every failure is sent back, rebuildable
        try:
            data = pickle.dumps(exc)
            pickle.loads(data)  # some exceptions pickle but cannot be rebuilt
        except Exception:  # noqa: BLE001
            data = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
        return False, data


def _worker_init() -> None:
    """Workers ignore Ctrl-C (the caller stops them), die silently on SIGTERM, and die with the
    caller if it is killed (Linux), instead of printing a traceback each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        except OSError:
            pass


def _stop(pool: ProcessPoolExecutor, pending: deque[Future]) -> None:
    """End the workers now when work is left (a normal end has nothing pending).

    The pending futures are not cancelled first: the executor's manager thread fails every pending
    future once it sees the workers die, and setting that failure on a cancelled future raises
    InvalidStateError in that thread (a traceback on stderr after Ctrl-C or SIGTERM)."""
    if pending:
        # The executor has no public way to end running workers before Python 3.14
        # (terminate_workers); its process table is the documented-in-source way to reach them.
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=not pending)
