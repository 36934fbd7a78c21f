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
    """The training settings of every run of the main job (sized for a 2-core CPU): the model, the
    patch (default: the plan's; 32 x 64 x 64 on the synthetic data), batch 2, lr 0.01, two threads,
    one data worker, validation on at most 4 cases per dataset."""
    t = TrainConfig(batch_size=2, threads=2)
    t.optim.lr, t.data.num_workers, t.validation.max_cases = 0.01, 1, 4
    return t


@dataclasses.dataclass
class PipelineConfig:
    memory_gb: float = 8.0
    pretrain_steps: int = 400
    """Pretraining: four epochs of ``pretrain_steps // 4`` steps."""
    finetune_epochs: int = 4
    finetune_iters: int = 25
    """Fine-tuning and from-scratch runs: epochs x iterations, validated after every epoch."""
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
        ("finetune_s", lambda: _finetune(work, target_spec, cfg, jobs, progress)),
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


def _finetune(work: Path, target: PoolSpec, cfg: PipelineConfig, jobs: int, progress: bool) -> None:
    from medfoundry.transfer.finetune import train_or_resume

    tcfg = cfg.run_config(cfg.finetune_epochs, cfg.finetune_iters)
    train_or_resume(work / "finetune", target, tcfg, work / "pretrain", progress, jobs)


def _scratch(work: Path, cfg: PipelineConfig, progress: bool) -> None:
    """The fine-tuning run's twin: same target data, config and steps, random initial weights."""
    from medfoundry.transfer.finetune import train_or_resume

    tcfg = cfg.run_config(cfg.finetune_epochs, cfg.finetune_iters)
    train_or_resume(work / "scratch", work / "finetune" / "target", tcfg, None, progress)


def _predict(work: Path, progress: bool) -> None:
    """The fine-tuned model on the target's validation cases, as files in their own geometry."""
    from medfoundry.inference.predict_files import predict_paths
    from medfoundry.inference.predictor import Predictor

    val, refs = _val_cases(work), work / "references"
    refs.mkdir(exist_ok=True)
    images = work / "val_images"
    images.mkdir(exist_ok=True)
    for case in val:
        name = case["id"].split("/", 1)[1]
        for i, img in enumerate(case["images"]):
            _link(img, images / f"{name}_{i:04d}{_suffix(img)}")
        _link(case["label"], refs / f"{name}{_suffix(case['label'])}")
    predictor = Predictor.from_checkpoint(work / "finetune", "cpu")
    out = predict_paths(predictor, images, work / "predictions", progress=progress)
    if out["failed"]:
        raise MedfoundryError(f"prediction failed for {sorted(out['failed'])}")


def _evaluate(work: Path, jobs: int, progress: bool) -> None:
    from medfoundry.evaluation.evaluate import evaluate_folders

    evaluate_folders(
        work / "predictions",
        work / "references",
        work / "evaluation" / "summary.json",
        jobs=jobs,
        progress=progress,
    )


def _report(work: Path, pool_dir: Path, target: str, timings: dict) -> dict:
    from medfoundry.runs.metrics import read_metrics
    from medfoundry.workflows.report import save_overlay, transfer_rows, write_report

    val = {
        run: [r for r in read_metrics(work / run) if r["kind"] == "val"]
        for run in ("pretrain", "finetune", "scratch")
    }
    rows = transfer_rows(val["finetune"], val["scratch"], target)
    evaluation = read_json(work / "evaluation" / "summary.json")
    labels = read_json(work / "finetune" / "labels.json")
    l2g = load_pool(work / "finetune" / "target")["datasets"][target]["local_to_global"]
    g_names = {i: n for n, i in labels.items()}
    class_names = {int(k): g_names.get(v, str(k)) for k, v in l2g.items()}
    report_dir = work / "report"
    report_dir.mkdir(exist_ok=True)
    overlays = []
    for case in _val_cases(work)[:3]:
        name = case["id"].split("/", 1)[1]
        png = report_dir / f"overlay_{name}.png"
        if not png.exists():
            pred = work / "predictions" / f"{name}{_suffix(case['label'])}"
            save_overlay(case["images"], case["label"], pred, png, f"{target} / {name}")
        overlays.append(png.name)
    pool = load_pool(pool_dir)
    summary = {
        "pretraining pool": ", ".join(
            f"{n} ({d['num_cases']})" for n, d in pool["datasets"].items()
        ),
        "held-out target": target,
        "pretraining best validation mean Dice (patches)": _best(val["pretrain"]),
        "fine-tuned final validation mean Dice": rows[-1]["finetuned"] if rows else None,
        "from-scratch final validation mean Dice": rows[-1]["scratch"] if rows else None,
        "timings_s": timings,
    }
    html = write_report(
        report_dir,
        "medfoundry main job",
        {
            "summary": summary,
            "transfer": rows,
            "dice": evaluation,
            "class_names": class_names,
            "overlays": overlays,
        },
    )
    return {
        **summary,
        "transfer": rows,
        "evaluation_mean": evaluation["mean"],
        "report": str(html),
        "pool_dir": str(pool_dir),
    }


def _best(val: list[dict]):
    """The best validation during training (the one the best checkpoint follows)."""
    scores = [r["val/mean"] for r in val if "val/mean" in r and not r.get("final")]
    return max(scores) if scores else None


def _val_cases(work: Path) -> list[dict]:
    splits = read_json(work / "finetune" / "splits.json")
    by_id = {c["id"]: c for c in load_pool(work / "finetune" / "target")["cases"]}
    return [by_id[i] for i in splits["val"]]


def _suffix(path: str) -> str:
    return next(
        (s for s in (".nii.gz", ".nii", ".nrrd", ".mha") if str(path).endswith(s)), ".nii.gz"
    )


def _link(src: str, dst: Path) -> None:
    if not dst.exists():
        dst.symlink_to(Path(src).resolve())
