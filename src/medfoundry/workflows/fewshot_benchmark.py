"""``medfoundry benchmark fewshot``: the label-efficiency benchmark.

For each target dataset, train on ``n`` labelled target cases (``n`` in ``ns``; 0 means all), several
seeded case subsets for small ``n``, from each start, with the same steps and recipe:

- ``scratch``: random weights;
- ``supervised``: pretrained on the pool without the target (its labels);
- ``ssl``: masked-volume modelling on the pool's images and the target's training images;
- ``both``: supervised on the pool's labels and masked modelling on every image, by turns.

The target's labels never enter pretraining (it joins the SSL pools ``images_only``), and its fixed
validation cases enter no training at all. Each run's final weights predict the validation images,
and ``medfoundry evaluate`` scores them at the input grid: Dice per class and mean. Writes per target
``runs.csv`` (one row per run), ``table.md`` / ``table.csv`` (mean and spread over subsets) and
``fewshot.png`` (Dice against labelled cases, one curve per start). Finished runs are kept and
unfinished ones resumed, so an interrupted benchmark goes on where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Literal

from medfoundry import MedfoundryError
from medfoundry.data.split import fixed_split, labelled_subset
from medfoundry.evaluation.evaluate import evaluate_folders
from medfoundry.planning import make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.preprocessing import preprocess_pool
from medfoundry.runs.checkpoint import find_checkpoint
from medfoundry.runs.metrics import read_metrics
from medfoundry.training.config import (
    RENAMED,
    TrainConfig,
    apply_overrides,
    check_config,
    read_preset,
)
from medfoundry.transfer.recipe import FINETUNE_RECIPE
from medfoundry.utils.names import check_name
from medfoundry.utils.typed_config import config_from_dict
from medfoundry.workflows.fewlabel_eval import link_validation
from medfoundry.workflows.fewshot_table import write_tables
from medfoundry.workflows.main_job import real_data_spec

log = logging.getLogger(__name__)
Start = Literal["scratch", "supervised", "ssl", "both"]
OBJECTIVE_OF_START = {"supervised": "segmentation", "ssl": "masked", "both": "segmentation+masked"}


@dataclasses.dataclass
class FewshotTarget:
    name: str = ""
    """A dataset of ``shared_data_pool.yaml``."""
    pool: list[str] = dataclasses.field(default_factory=list)
    """The pretraining pool (datasets of ``shared_data_pool.yaml``, not the target)."""
    patch: list[int] | None = None
    """Patch (Z, Y, X) of every run on the target (default: the target's plan)."""
    channels: list[int] | None = None
    """The target's image channels (default: the pool preset's; e.g. BraTS ``[0, 1]``: FLAIR and
    T1c, while its images in the one-channel SSL pool stay FLAIR). The pretrained stem adapts."""
    val_fraction: float | None = None
    """The target's validation fraction (default: the benchmark's ``val_fraction``)."""
    spacing: list[float] | None = None
    """The target's (Z, Y, X) mm spacing instead of the planned one (e.g. a coarse grid for a quick
    check; validation is still scored on the original grid)."""


def fewshot_training() -> TrainConfig:
    t = TrainConfig(batch_size=2, threads=2)
    t.optim.lr, t.data.num_workers = 0.01, 1
    return t


@dataclasses.dataclass
class FewshotBenchConfig:
    ns: list[int] = dataclasses.field(default_factory=lambda: [2, 4, 8, 16, 0])
    """Labelled target cases per run (0: every training case)."""
    subsets: int = 3
    """Seeded case subsets for each ``n <= max_subset_n`` (one subset above)."""
    max_subset_n: int = 8
    starts: list[Start] = dataclasses.field(
        default_factory=lambda: ["scratch", "supervised", "ssl", "both"]
    )
    pretrain_steps: int = 1200
    pretrain_patch: list[int] | None = None
    steps: int = 250
    """Training steps of every run on the target, whatever ``n`` and start."""
    recipes: dict = dataclasses.field(default_factory=lambda: {"default": list(FINETUNE_RECIPE)})
    """Fine-tuning recipes of the pretrained starts: name -> ``--set`` overrides of ``train`` (e.g.
    ``optim.body_lr_scale=0.1``); every pretrained start runs with each. ``scratch`` trains with
    ``train`` alone. Default: ``medfoundry finetune``'s recipe."""
    val_fraction: float = 0.2
    val_max_cases: int = 20
    """The fixed validation cases: a seeded ``val_fraction`` of the target, at most this many."""
    seed: int = 0
    train: TrainConfig = dataclasses.field(default_factory=fewshot_training)
    """Every other training setting, for every run (pretraining included)."""
    targets: list[FewshotTarget] = dataclasses.field(default_factory=list)


def load_fewshot_config(name_or_path: str) -> FewshotBenchConfig:
    """A preset (bundled name or YAML file), checked key by key."""
    renamed = {f"train.{old}": f"train.{new}" for old, new in RENAMED.items()}
    cfg = config_from_dict(FewshotBenchConfig, read_preset(name_or_path), renamed=renamed)
    check_config(cfg.train)
    for name, overrides in cfg.recipes.items():
        check_name(str(name), f"{name_or_path}: recipe name")
        if not isinstance(overrides, list):
            raise MedfoundryError(f"{name_or_path}: recipe '{name}': a list of key=value overrides")
        check_config(apply_overrides(copy.deepcopy(cfg.train), [str(o) for o in overrides]))
    for t in cfg.targets:
        check_name(t.name, f"{name_or_path}: target name")
        if t.name in t.pool:
            raise MedfoundryError(f"{name_or_path}: target '{t.name}' is in its own pool")
        if t.val_fraction is not None and not 0 < t.val_fraction < 1:
            raise MedfoundryError(f"{name_or_path}: target '{t.name}': val_fraction in (0, 1)")
    if any(n < 0 for n in cfg.ns) or cfg.subsets < 1 or cfg.steps < 1 or cfg.pretrain_steps < 1:
        raise MedfoundryError(f"{name_or_path}: ns >= 0, subsets, steps and pretrain_steps >= 1")
    return cfg


def run_fewshot_benchmark(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: FewshotBenchConfig,
    only: list[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """Run every target (or those in ``only``); returns ``{target: run rows}``."""
    if unknown := sorted(set(only or []) - {t.name for t in cfg.targets}):
        raise MedfoundryError(f"--target {unknown}: not targets of the preset")
    spec = real_data_spec(data_dir)
    names = {d.name for d in spec.datasets}
    for t in cfg.targets:
        if unknown := [n for n in [t.name, *t.pool] if n not in names]:
            raise MedfoundryError(f"target {t.name}: unknown dataset(s) {unknown}")
    out = Path(out_dir)
    return {
        t.name: _target(spec, t, out / t.name, cfg, jobs, progress)
        for t in cfg.targets
        if not only or t.name in only
    }


def _target(spec, t: FewshotTarget, out: Path, cfg, jobs: int, progress: bool) -> list[dict]:
    from medfoundry.transfer.finetune import prepare_target

    by_name = {d.name: d for d in spec.datasets}
    dataset = by_name[t.name]
    if t.channels is not None:
        dataset = dataclasses.replace(dataset, channels=list(t.channels))
    target_spec = dataclasses.replace(spec, name=t.name, datasets=[dataset])
    target_dir = prepare_target(
        target_spec, out / "target", cfg.train.model, 8.0, t.patch, jobs, progress, t.spacing
    )
    pool = load_pool(target_dir)
    val_fraction = cfg.val_fraction if t.val_fraction is None else t.val_fraction
    train_ids, val_ids = fixed_split(pool["cases"], val_fraction, cfg.seed, cfg.val_max_cases)
    names = pool["datasets"][t.name]["label_map"]  # local id -> class name
    by_id = {c["id"]: c for c in pool["cases"]}
    refs = out / "val_references"
    link_validation([by_id[i] for i in val_ids], out / "val_images", refs)
    sources = {"scratch": None}
    for start in cfg.starts:
        if start != "scratch":
            sources[start] = _pretrained(spec, t, start, out, cfg, val_ids, jobs, progress)
    rows = []
    for n in cfg.ns:
        few = 0 < n <= cfg.max_subset_n and n < len(train_ids)  # else every subset is the same
        for subset in range(cfg.subsets if few else 1):
            ids = labelled_subset(train_ids, n, cfg.seed + subset)
            for start, recipe in _start_recipes(cfg):
                run = out / f"n{n or 'all'}_s{subset}" / _folder(start, recipe)
                rcfg = _run_config(cfg, t, ids, val_ids, recipe)
                rows.append(
                    _run(run, target_dir, sources[start], refs, rcfg, progress, names)
                    | {"start": start, "recipe": recipe or "-", "n": len(ids), "subset": subset}
                )
                log.info("%s: %s", t.name, rows[-1])
    write_tables(out, t.name, rows, _budget(out, rows))
    return rows


def _pretrained(spec, t, start: str, out: Path, cfg, val_ids, jobs, progress) -> Path:
    """The checkpoint a start fine-tunes from; SSL pools add the target's images (not its labels)."""
    from medfoundry.transfer.finetune import train_or_resume

    by_name = {d.name: d for d in spec.datasets}
    datasets = [by_name[n] for n in t.pool]
    if start != "supervised":
        datasets.append(dataclasses.replace(by_name[t.name], images_only=True, label_map=None))
    kind = "supervised" if start == "supervised" else "ssl"  # ssl and both share a pool
    pool_dir = out / f"pool_{kind}"
    if not (pool_dir / "preprocessed" / "manifest.json").is_file():
        build_pool(
            dataclasses.replace(spec, datasets=datasets), pool_dir, jobs=jobs, progress=progress
        )
        make_plan(
            pool_dir,
            model=cfg.train.model,
            patch_size_vox=cfg.pretrain_patch,
            batch_size=cfg.train.batch_size,
        )
        preprocess_pool(pool_dir, jobs=jobs, progress=progress)
    pcfg = copy.deepcopy(cfg.train)
    pcfg.task, pcfg.patch_size = OBJECTIVE_OF_START[start], cfg.pretrain_patch
    pcfg.epochs, pcfg.iters_per_epoch = 4, max(1, cfg.pretrain_steps // 4)
    pcfg.validation.every, pcfg.validation.final = 0, False  # only the final weights are used
    if start != "supervised":  # the target's validation images are never trained on
        pooled = {c["id"] for c in load_pool(pool_dir)["cases"]}
        pcfg.data.val_cases = [i for i in val_ids if i in pooled]
    run = train_or_resume(out / f"pretrain_{start}", pool_dir, pcfg, None, progress)
    return find_checkpoint(run, "final")


def _start_recipes(cfg) -> list[tuple[str, str]]:
    """(start, recipe name) of every run at one n and subset; scratch has no recipe ("")."""
    return [
        (start, recipe)
        for start in cfg.starts
        for recipe in ([""] if start == "scratch" else list(cfg.recipes))
    ]


def _folder(start: str, recipe: str) -> str:
    return start if recipe in ("", "default") else f"{start}.{recipe}"


def _run_config(cfg, t: FewshotTarget, ids, val_ids, recipe: str) -> TrainConfig:
    """``train`` with the recipe's overrides: exactly ``steps`` steps on ``ids``, no validation
    during training (the run is evaluated at the input grid afterwards)."""
    rcfg = apply_overrides(copy.deepcopy(cfg.train), [str(o) for o in cfg.recipes.get(recipe, [])])
    rcfg.task, rcfg.patch_size = "segmentation", t.patch
    rcfg.data.train_cases, rcfg.data.val_cases = ids, val_ids
    rcfg.epochs, rcfg.iters_per_epoch = 1, cfg.steps
    rcfg.validation.every, rcfg.validation.final = 0, False
    return rcfg


def _run(run: Path, target_dir, source, refs: Path, rcfg, progress, names) -> dict:
    """Train one run (kept if finished), predict the validation images, evaluate at the input grid."""
    from medfoundry.transfer.finetune import train_or_resume

    train_or_resume(run, target_dir, rcfg, source, progress)
    summary = run / "evaluation" / "summary.json"
    if not summary.is_file():
        _evaluate(run, refs, summary, progress)
    s = json.loads(summary.read_text())
    train = [r for r in read_metrics(run) if r["kind"] == "train"]
    row = {
        "steps": train[-1]["step"] if train else 0,
        "train_min": round(sum(r["step_time_s"] for r in train) / 60, 2),
        **{f"dice_{names.get(lab, lab)}": m["dice"] for lab, m in s["mean"].items()},
        "mean": s["overall"]["dice"],
    }
    return row


def _evaluate(run: Path, refs: Path, summary: Path, progress: bool) -> None:
    from medfoundry.inference.predict_files import predict_paths
    from medfoundry.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(run, "cpu", mirror=False)
    images = refs.parent / "val_images"
    predict_paths(predictor, images, run / "val_predictions", progress=False)
    evaluate_folders(run / "val_predictions", refs, summary, progress=progress)


def _budget(out: Path, rows: list[dict]) -> dict:
    """Minutes of training: every run's and the pretraining runs'."""
    pre = {}
    for run in sorted(out.glob("pretrain_*")):
        train = [r for r in read_metrics(run) if r["kind"] == "train"]
        pre[run.name] = round(sum(r["step_time_s"] for r in train) / 60, 2)
    return {
        "pretraining_min": pre,
        "target_runs_min": round(sum(r["train_min"] for r in rows), 2),
        "total_min": round(sum(pre.values()) + sum(r["train_min"] for r in rows), 2),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
