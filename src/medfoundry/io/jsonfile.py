"""JSON artefacts (pool.json, plan.json, properties.json): stable bytes, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medfoundry import MedfoundryError


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON with sorted keys; the file appears only once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
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
