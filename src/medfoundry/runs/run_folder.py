"""The run folder, and the one writer of its checkpoints.

``RUN_DIR/``: ``config.yaml`` (resolved config), ``plan.json``, ``labels.json``, ``splits.json``,
``init.json`` (fine-tuning: what was loaded), ``metrics.jsonl``, ``tensorboard/``, ``progress.png``
(:mod:`medfoundry.runs.metrics`) and ``checkpoints/{latest,best,final}.safetensors``
(:mod:`medfoundry.runs.checkpoint`). A fine-tuning run may also hold ``target/``, its preprocessed
target pool, made before training starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from medfoundry import MedfoundryError
from medfoundry.runs.checkpoint import (
    CHECKPOINT_NAMES,
    checkpoint_path,
    find_checkpoint,
    save_checkpoint,
)
from medfoundry.runs.metrics import RunLog, read_metrics
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import write_json

RUN_DATA_DIR = "target"
"""A new run folder may already hold this subfolder: the preprocessed target of a fine-tuning run."""


RUN_FILES = {
    "config.yaml",
    "plan.json",
    "labels.json",
    "splits.json",
    "init.json",
    "metrics.jsonl",
    "tensorboard",
    "progress.png",
    "checkpoints",
    RUN_DATA_DIR,
}
"""What a run folder holds; a folder holding only these and no checkpoint is a run that stopped
before its first checkpoint (a non-finite loss at step 3, a kill): starting it again is allowed."""


def check_new_run_dir(run_dir: str | os.PathLike, hint: str = "use --resume RUN_DIR") -> None:
    """Refuse a run folder that holds anything but a fine-tuning target or the files of a run that
    never wrote a checkpoint (one line, nothing written)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise MedfoundryError(f"{run_dir} is a file, not a run folder")
    if not run_dir.exists():
        return
    names = {p.name for p in run_dir.iterdir()}
    if not names <= RUN_FILES or not _never_saved(run_dir):
        raise MedfoundryError(f"{run_dir} is not empty: {hint} to continue it, or another folder")


def _never_saved(run_dir: Path) -> bool:
    """True when the run in ``run_dir`` stopped before the step of its first checkpoint (by its own
    config and log), so no checkpoint was ever written; a finished run whose checkpoints were
    deleted to free space is not one (its log shows the steps that wrote them)."""
    if any(find_checkpoint(run_dir, name) for name in CHECKPOINT_NAMES):
        return False
    steps = [r["step"] for r in read_metrics(run_dir) if r.get("kind") == "train"]
    if not steps:
        return True
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        first = min(int(cfg["ckpt_every_steps"]), int(cfg["iters_per_epoch"]))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return False
    return max(steps) < first


def open_run_dir(run_dir: Path, meta: dict, step: int) -> RunLog:
    """Write the run's description files (from a checkpoint's ``meta``) and open its metrics log,
    dropping lines logged after ``step`` (a resumed run logs them again)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if step == 0:  # a new run: nothing of an attempt that stopped before its first checkpoint
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a killed write's temp file
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        (run_dir / "progress.png").unlink(missing_ok=True)
    with atomic_path(run_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(meta["config"], sort_keys=False))
    write_json(run_dir / "plan.json", meta["plan"])
    write_json(run_dir / "labels.json", meta["labels"])
    write_json(run_dir / "splits.json", meta["run"]["splits"])
    if meta["run"]["init"] is not None:
        write_json(run_dir / "init.json", meta["run"]["init"])
    runlog = RunLog(run_dir)
    runlog.truncate_after(step)
    return runlog


class CheckpointWriter:
    """Owns ``RUN_DIR/checkpoints/{latest,best,final}``: one save writes the first name's file, and
    the other names become hard links to it (no second write; each name is still replaced
    atomically, so a later ``latest`` leaves ``best`` as it was)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def save(self, names: list[str], meta: dict, weights: dict, optimizer: dict, rng) -> None:
        """Write the checkpoint under each of ``names``, ``latest`` last: a kill in between leaves
        a ``latest`` no newer than ``best`` and ``final``, so a resumed run redoes what they lack."""
        names = sorted(names, key=CHECKPOINT_NAMES.index)
        save_checkpoint(checkpoint_path(self.run_dir, names[0]), meta, weights, optimizer, rng)
        for name in names[1:]:
            self.link(name, names[0])

    def link(self, name: str, existing: str) -> None:
        """Make ``name`` the same file as the ``existing`` one (replaced atomically)."""
        source = checkpoint_path(self.run_dir, existing)
        with atomic_path(checkpoint_path(self.run_dir, name)) as tmp:
            try:
                os.link(source, tmp)
            except OSError:  # a file system without hard links
                shutil.copyfile(source, tmp)

    def discard(self, name: str) -> None:
        """Remove ``name`` (e.g. ``final`` when a finished run is continued for longer)."""
        checkpoint_path(self.run_dir, name).unlink(missing_ok=True)
        (self.run_dir / "checkpoints" / f"{name}.pt").unlink(missing_ok=True)
