"""JSON artefacts (pool.json, plan.json, properties.json): stable bytes, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medfoundry import MedfoundryError
from medfoundry.utils.atomic import atomic_path


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys; the file appears only once complete."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return path


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file; a missing or broken file is a one-line :class:`MedfoundryError`."""
    path = Path(path)
    if not path.is_file():
        raise MedfoundryError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MedfoundryError(f"{path}: unreadable {what} ({exc})") from exc
