"""The one folder medfoundry (and the libraries it drives) may write outside a command's output.

``$XDG_CACHE_HOME/medfoundry`` (default ``~/.cache/medfoundry``) holds per-machine verdicts (the CPU
bf16 check) and the caches of libraries that would otherwise write into the user's home or ``TMPDIR``
(matplotlib's font list and config folder, torch's compiler cache folder, made when torch's compiler
package is imported). Deleting it is always safe.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/medfoundry`` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "medfoundry"


def route_library_caches() -> None:
    """Point matplotlib's and torch's cache folders into :func:`cache_dir`, unless the user has
    chosen them (call before those libraries are imported; the command line does)."""
    base = cache_dir()
    os.environ.setdefault("MPLCONFIGDIR", str(base / "matplotlib"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(base / "torchinductor"))
