"""One helper to map a function over work items in worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def map_with_progress(
    fn: Callable[[Any], T], items: list, jobs: int = 1, desc: str = "", progress: bool = True
) -> Iterator[T]:
    """Yield ``fn(item)`` for each item, in order, using ``jobs`` processes (1: in this process).

    Each worker holds one item at a time, so memory stays bounded by ``jobs`` items.
    """
    bar = tqdm(total=len(items), desc=desc, disable=not progress, unit="case", leave=False)
    try:
        if jobs <= 1 or len(items) <= 1:
            results: Iterable[T] = map(fn, items)
            for r in results:
                bar.update()
                yield r
            return
        with mp.get_context("fork").Pool(min(jobs, len(items))) as workers:
            for r in workers.imap(fn, items, chunksize=1):
                bar.update()
                yield r
    finally:
        bar.close()
