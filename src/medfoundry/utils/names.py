"""Names that become parts of file paths (dataset names, case ids, run names) stay inside their folder.

A pool's dataset name and every case name end up in paths such as
``POOL_DIR/preprocessed/<dataset>/<case>.image.npy``. A name holding a path separator, ``..``, a
leading dot, a drive or a control character could place a file outside the folder the user chose, so
it is refused in one line where it is read (the pool file, a case list, a file name), and every
path built from names is checked once more where it is written (:func:`path_inside`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medfoundry import MedfoundryError

_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")
MAX_NAME_LENGTH = 200


def check_name(name: object, what: str) -> str:
    """``name`` if it is one safe path component (letters, digits, ``_ . + -``, not starting with a
    dot or dash, no ``..``, at most 200 characters); else a one-line error naming ``what``."""
    text = str(name)  # YAML reads some plain names as numbers or dates: their text is the name
    if (
        name is None
        or isinstance(name, list | tuple | dict | set | bool)
        or not _SAFE.fullmatch(text)
        or ".." in text
        or len(text) > MAX_NAME_LENGTH
    ):
        raise MedfoundryError(
            f"{what} {text!r} is not a plain name: use letters, digits, '_', '-', '.' and '+' only "
            "(no path separators, no '..', not starting with '.' or '-')"
        )
    return text


def check_case_id(case_id: str, what: str = "case id") -> str:
    """A pool case id ``<dataset>/<case>``: two safe names joined by one ``/``."""
    parts = str(case_id).split("/")
    if len(parts) != 2:
        raise MedfoundryError(f"{what} {case_id!r} is not '<dataset>/<case>'")
    for part in parts:
        check_name(part, what)
    return str(case_id)


def path_inside(base: str | os.PathLike, *parts: str) -> Path:
    """``base / parts...``, refused unless it resolves inside ``base`` (symbolic links followed)."""
    base_path = Path(base)
    path = base_path.joinpath(*parts)
    root = os.path.realpath(base_path)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise MedfoundryError(f"{path}: would be written outside {base_path}; refused")
    return path
