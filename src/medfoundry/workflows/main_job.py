"""The main job, end to end: data -> pool -> plan -> preprocess -> pretrain -> fine-tune on a held-out
dataset (and the same training from scratch) -> predict -> evaluate -> HTML report.

With no data given it uses the built-in synthetic datasets (pretrain on the CT-like phantom, transfer
to the MR-like one, which shares two of its three structures); ``data_dir`` points at a folder laid
out like ``../shared/data`` (pretrain on ACDC, transfer to hippocampus). Every step reuses what a
previous run finished (a half-finished training run is resumed exactly).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from importlib import resources
from pathlib import Path

import yaml

from medfoundry import MedfoundryError
from medfoundry.data.split import fixed_split, labelled_subset
from medfoundry.planning import make_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.pool.spec import PoolSpec, load_pool_spec, pool_spec_from_dict
from medfoundry.preprocessing import preprocess_pool
from medfoundry.synth import write_synthetic_datasets
from medfoundry.training.config import TrainConfig
from medfoundry.utils.jsonfile import read_json, write_json

log = logging.getLogger(__name__)
REAL_DATA_PRESET = "shared_data_pool.yaml"
REAL_HOLDOUT = "hippocampus"


def main_job_training() -> TrainConfig:
    """The training settings of every run of the main job (sized for a 2-core CPU without bf16):
    tsfm_test (0.37 s per fp32 step of batch 2 at 32 x 64 x 64 on an AVX2-only 2-core EPYC), the
    patch (default: the plan's; 32 x 64 x 64 on the synthetic data), batch 2, lr 0.01, two threads,
    one data worker, validation on at most 4 cases per dataset."""
    t = TrainConfig(model="tsfm_test", batch_size=2, threads=2)
    t.optim.lr, t.data.num_workers, t.validation.max_cases = 0.01, 1, 4
    return t


@dataclasses.dataclass
class PipelineConfig:
    memory_gb: float = 8.0
    pretrain_steps: int = 400
    """Pretraining: four epochs of ``pretrain_steps // 4`` steps."""
    finetune_epochs: int = 8
    finetune_iters: int = 25
    """Fine-tuning and from-scratch runs: epochs x iterations, validated after every epoch."""
    target_labelled: int = 4
    """Labelled target cases the fine-tuning and from-scratch runs train on (a seeded subset of the
    target's training cases; 0: all of them): the few-label setting where pretraining should pay."""
    target_val_cases: int = 20
    """The target's fixed validation cases (a seeded fifth of its cases, at most this many): both
    runs are scored on them at the input grid."""
    pretrain_final_validation: bool = False
    """Validate the pretrained weights on whole volumes of every pool dataset at the end. Off: on the
    real pool the CT volumes make it most of the main job's pretraining time (68 of 85 s measured
    at tsfm_test, 16 x 32 x 32), and the job's figures are the target's; the pretraining's own
    figure is then its validation on patches."""
    train: TrainConfig = dataclasses.field(default_factory=main_job_training)
    """Every other training setting, shared by the pretraining, fine-tuning and scratch runs."""

    def run_config(self, epochs: int, iters: int) -> TrainConfig:
        """``train`` with this schedule (a copy)."""
        cfg = copy.deepcopy(self.train)
        cfg.epochs, cfg.iters_per_epoch = epochs, iters
        return cfg


def run_pipeline(
    work_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    pool_file: str | os.PathLike | None = None,
    jobs: int = 2,
    synth_cases: int = 16,
    holdout: str | None = None,
    cfg: PipelineConfig | None = None,
    progress: bool = True,
) -> dict:
    """Run the main job into ``work_dir``; returns a summary dict (also ``summary.json``).

    ``holdout``: the dataset kept out of pretraining and transferred to (default: hippocampus with
    ``data_dir``, else the pool's last dataset).
    """
    cfg = cfg or PipelineConfig()
    work = Path(work_dir)
    if work.exists() and not work.is_dir():
        raise MedfoundryError(f"{work} is a file, not a work folder")
    timings: dict[str, float] = {}
    spec = load_pool_spec(pool_file) if pool_file is not None else None
    if data_dir is not None:
        spec, holdout = real_data_spec(data_dir), holdout or REAL_HOLDOUT
    if spec is not None:  # a bad input fails before the work folder is made
        split_holdout(spec, holdout or spec.datasets[-1].name)
    work.mkdir(parents=True, exist_ok=True)
    if spec is None:
        t = time.perf_counter()
        synth = write_synthetic_datasets(
            work / "synthetic", cases=synth_cases, jobs=jobs, progress=progress
        )
        spec = load_pool_spec(synth)
        cfg.train.patch_size = cfg.train.patch_size or [32, 64, 64]
        timings["synth_s"] = round(time.perf_counter() - t, 3)
    pre_spec, target_spec = split_holdout(spec, holdout or spec.datasets[-1].name)
    pool_dir = work / "pool"
    steps = [
        ("pool_build_s", lambda: build_pool(pre_spec, pool_dir, jobs=jobs, progress=progress)),
        ("plan_s", lambda: _plan(pool_dir, cfg)),
        ("preprocess_s", lambda: preprocess_pool(pool_dir, jobs=jobs, progress=progress)),
        ("pretrain_s", lambda: _pretrain(pool_dir, work / "pretrain", cfg, progress)),
        ("target_s", lambda: _target(work, target_spec, cfg, jobs, progress)),
        ("finetune_s", lambda: _finetune(work, cfg, progress)),
        ("scratch_s", lambda: _scratch(work, cfg, progress)),
        ("predict_s", lambda: _predict(work, progress)),
        ("evaluate_s", lambda: _evaluate(work, jobs, progress)),
    ]
    for name, fn in steps:
        t = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t, 3)
    summary = _report(work, pool_dir, target_spec.datasets[0].name, timings)
    write_json(work / "summary.json", summary)
    return summary


def split_holdout(spec: PoolSpec, holdout: str) -> tuple[PoolSpec, PoolSpec]:
    """The pretraining pool (every dataset but ``holdout``) and the one-dataset target pool."""
    names = [d.name for d in spec.datasets]
    if holdout not in names:
        raise MedfoundryError(
            f"held-out dataset '{holdout}' is not in the pool ({', '.join(names)})"
        )
    if len(names) < 2:
        raise MedfoundryError("the main job needs at least two datasets: one is held out")
    rest = [d for d in spec.datasets if d.name != holdout]
    target = [d for d in spec.datasets if d.name == holdout]
    return (
        dataclasses.replace(spec, datasets=rest),
        dataclasses.replace(spec, name=holdout, datasets=target),
    )


def real_data_spec(data_dir: str | os.PathLike) -> PoolSpec:
    """The preset pool (hippocampus + ACDC) over a folder laid out like ``../shared/data``."""
    data = Path(data_dir).resolve()
    if not data.is_dir():
        raise MedfoundryError(f"{data}: data folder not found")
    raw = yaml.safe_load(
        resources.files("medfoundry").joinpath("presets", REAL_DATA_PRESET).read_text()
    )
    return pool_spec_from_dict(raw, base_dir=data, source=data / REAL_DATA_PRESET)


def _plan(pool_dir: Path, cfg: PipelineConfig) -> None:
    t = cfg.train
    make_plan(pool_dir, model=t.model, memory_gb=cfg.memory_gb, batch_size=t.batch_size)


def _pretrain(pool_dir: Path, run: Path, cfg: PipelineConfig, progress: bool) -> None:
    from medfoundry.transfer.finetune import train_or_resume

    tcfg = cfg.run_config(4, max(1, cfg.pretrain_steps // 4))
    tcfg.validation.final = cfg.pretrain_final_validation
    train_or_resume(run, pool_dir, tcfg, None, progress)


def _target(work: Path, target: PoolSpec, cfg: PipelineConfig, jobs: int, progress: bool) -> None:
    """Plan and preprocess the target into ``target/``; fix its validation cases and draw the
    labelled training cases (``target_split.json``); link the validation files for prediction."""
    from medfoundry.transfer.finetune import prepare_target
    from medfoundry.workflows.fewlabel_eval import link_validation

    t = cfg.train
    pool_dir = prepare_target(
        target, work / "target", t.model, cfg.memory_gb, t.patch_size, jobs, progress
    )
    cases = load_pool(pool_dir)["cases"]
    train, val = fixed_split(cases, t.data.val_fraction, t.seed, cfg.target_val_cases)
    labelled = labelled_subset(train, cfg.target_labelled, t.seed)
    write_json(work / "target_split.json", {"train": labelled, "val": val, "available": len(train)})
    link_validation(
        [c for c in cases if c["id"] in set(val)], work / "val_images", work / "references"
    )


def _target_config(work: Path, cfg: PipelineConfig) -> TrainConfig:
    """Both target runs: the labelled subset, the fixed validation cases, equal steps; validation
    on patches after every epoch (the curve); the final weights are scored by ``evaluate``."""
    split = read_json(work / "target_split.json")
    tcfg = cfg.run_config(cfg.finetune_epochs, cfg.finetune_iters)
    tcfg.data.train_cases, tcfg.data.val_cases = split["train"], split["val"]
    tcfg.validation.final = False
    return tcfg


def _finetune(work: Path, cfg: PipelineConfig, progress: bool) -> None:
    from medfoundry.training.config import apply_overrides
    from medfoundry.transfer.finetune import train_or_resume
    from medfoundry.transfer.recipe import FINETUNE_RECIPE

    tcfg = apply_overrides(_target_config(work, cfg), list(FINETUNE_RECIPE))
    train_or_resume(work / "finetune", work / "target", tcfg, work / "pretrain", progress)


def _scratch(work: Path, cfg: PipelineConfig, progress: bool) -> None:
    """The fine-tuning run's twin: same target data, config and steps, random initial weights."""
    from medfoundry.transfer.finetune import train_or_resume

    train_or_resume(work / "scratch", work / "target", _target_config(work, cfg), None, progress)


def _predict(work: Path, progress: bool) -> None:
    from medfoundry.workflows.fewlabel_eval import predict_runs

    predict_runs(work, work / "val_images", progress)


def _evaluate(work: Path, jobs: int, progress: bool) -> None:
    from medfoundry.workflows.fewlabel_eval import evaluate_runs

    evaluate_runs(work, work / "references", jobs, progress)


def _report(work: Path, pool_dir: Path, target: str, timings: dict) -> dict:
    from medfoundry.runs.metrics import read_metrics
    from medfoundry.workflows.fewlabel_eval import comparison_rows, label_suffix, paired_wins
    from medfoundry.workflows.report import (
        save_overlay,
        save_transfer_plot,
        transfer_rows,
        write_report,
    )

    val = {
        run: [r for r in read_metrics(work / run) if r["kind"] == "val"]
        for run in ("pretrain", "finetune", "scratch")
    }
    curve = transfer_rows(val["finetune"], val["scratch"], target)
    evaluation = read_json(work / "evaluation" / "finetune" / "summary.json")
    class_names = _class_names(work, target)
    rows = comparison_rows(work, class_names)
    report_dir = work / "report"
    report_dir.mkdir(exist_ok=True)
    save_transfer_plot(curve, rows, report_dir / "transfer.png", target)
    overlays = []
    for case in _val_cases(work)[:3]:
        name = case["id"].split("/", 1)[1]
        png = report_dir / f"overlay_{name}.png"
        if not png.exists():
            pred = work / "predictions" / "finetune" / f"{name}{label_suffix(case['label'])}"
            save_overlay(case["images"], case["label"], pred, png, f"{target} / {name}")
        overlays.append(png.name)
    pool, split = load_pool(pool_dir), read_json(work / "target_split.json")
    mean = rows[-1]
    wins, cases = paired_wins(work)
    chosen = read_json(work / "postprocessing.json")["largest_component"]
    summary = {
        "pretraining pool": ", ".join(
            f"{n} ({d['num_cases']})" for n, d in pool["datasets"].items()
        ),
        "held-out target": target,
        "labelled target cases (both runs)": f"{len(split['train'])} of {split['available']}",
        "validation cases": len(split["val"]),
        "steps (both runs)": max((r["step"] for r in curve), default=None),
        "pretraining best validation mean Dice (patches)": _best(val["pretrain"]),
        "fine-tuned mean Dice": mean["finetune"],
        "from-scratch mean Dice": mean["scratch"],
        "pretrained start vs scratch": _verdict(mean["finetune"], mean["scratch"], wins, cases),
        "largest component kept (chosen on validation)": ", ".join(
            class_names.get(i, str(i)) for i in chosen
        )
        or "none",
        "fine-tuned mean Dice with that postprocessing": mean["finetune_post"],
        "timings_s": timings,
    }
    html = write_report(
        report_dir,
        "medfoundry main job",
        {
            "summary": summary,
            "transfer": curve,
            "comparison": rows,
            "plot": "transfer.png",
            "dice": evaluation,
            "class_names": class_names,
            "overlays": overlays,
        },
    )
    return {
        **summary,
        "transfer": curve,
        "comparison": rows,
        "evaluation_mean": evaluation["mean"],
        "report": str(html),
        "pool_dir": str(pool_dir),
    }


def _verdict(finetune: float | None, scratch: float | None, wins: int, cases: int) -> str:
    """One honest sentence: which start won, by how much, on how many cases."""
    if finetune is None or scratch is None:
        return "n/a"
    diff = finetune - scratch
    who = "pretrained start better" if diff > 0 else "pretrained start NOT better (no gain here)"
    return f"{who}: {diff:+.3f} mean Dice; better on {wins} of {cases} validation cases"


def _class_names(work: Path, target: str) -> dict[int, str]:
    """Output label id -> structure name of the target."""
    labels = read_json(work / "finetune" / "labels.json")
    l2g = load_pool(work / "target")["datasets"][target]["local_to_global"]
    g_names = {i: n for n, i in labels.items()}
    return {int(k): g_names.get(v, str(k)) for k, v in l2g.items()}


def _best(val: list[dict]):
    """The best validation during training (the one the best checkpoint follows)."""
    scores = [r["val/mean"] for r in val if "val/mean" in r and not r.get("final")]
    return max(scores) if scores else None


def _val_cases(work: Path) -> list[dict]:
    val = read_json(work / "target_split.json")["val"]
    by_id = {c["id"]: c for c in load_pool(work / "target")["cases"]}
    return [by_id[i] for i in val]
