"""Atomic file writes: a reader never sees half a file, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; it becomes ``path`` in one rename on success.

    The temporary name ends with ``path``'s own name, so libraries that choose the format from the
    suffix (nibabel, SimpleITK, matplotlib, ``np.savez``) write the same format. On any error (a full
    disk, an exception while writing) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
