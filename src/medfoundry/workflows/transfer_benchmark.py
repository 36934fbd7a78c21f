"""``medfoundry benchmark transfer``: TSFM's Table 2 on your data.

Per direction: pretrain on a pool without the target dataset, then fine-tune on the target for k
short epochs for each k, train the same model from scratch for the same k epochs, and train it from
scratch for a much longer budget (the "full training" reference). Every run validates on the same
held-out split of the target (the split is drawn from the target pool with the same seed). Output per
direction: ``table.md``, ``table.csv`` (Dice per class and mean for each k) and ``transfer.png``.
Every run folder is reused when finished and resumed when not, so the command can be rerun after a kill.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import os
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.planning import make_plan
from medfoundry.pool import build_pool
from medfoundry.preprocessing import preprocess_pool
from medfoundry.runs.checkpoint import find_checkpoint
from medfoundry.training.config import RENAMED, TrainConfig, check_config, read_preset
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.names import check_name
from medfoundry.utils.typed_config import config_from_dict
from medfoundry.workflows.main_job import real_data_spec

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Direction:
    name: str = ""
    pool: list[str] = dataclasses.field(default_factory=list)
    """The pretraining pool: dataset names of ``shared_data_pool.yaml``."""
    target: str = ""
    target_patch: list[int] | None = None


def bench_training() -> TrainConfig:
    """The training settings of every run of the benchmark unless the preset says otherwise."""
    t = TrainConfig(batch_size=4, iters_per_epoch=25, threads=2)
    t.optim.lr, t.data.num_workers = 0.01, 1
    return t


@dataclasses.dataclass
class TransferBenchConfig:
    pretrain_steps: int = 1200
    """Pretraining: four epochs of ``pretrain_steps // 4`` steps."""
    pretrain_patch: list[int] | None = None
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 5, 10])
    """Fine-tuning and from-scratch budgets, in epochs of ``train.iters_per_epoch``."""
    full_epochs: int = 50
    full_val_every: int = 10
    head_warmup_fraction: float = 0.0
    """Share of each fine-tuning run's steps that trains the new head alone (``head_warmup_steps``)."""
    train: TrainConfig = dataclasses.field(default_factory=bench_training)
    """Every other training setting (model, batch, lr, validation cases...), for every run."""
    directions: list[Direction] = dataclasses.field(default_factory=list)

    def run_config(
        self, epochs: int, patch, val_every: int, iters: int | None = None
    ) -> TrainConfig:
        """``train`` with this schedule, patch and validation interval (a copy)."""
        cfg = copy.deepcopy(self.train)
        cfg.epochs, cfg.patch_size, cfg.validation.every = epochs, patch, val_every
        cfg.iters_per_epoch = iters or cfg.iters_per_epoch
        return cfg


def load_bench_config(name_or_path: str) -> TransferBenchConfig:
    """A benchmark preset (a bundled name or a YAML file), checked key by key."""
    renamed = {f"train.{old}": f"train.{new}" for old, new in RENAMED.items()}
    cfg = config_from_dict(TransferBenchConfig, read_preset(name_or_path), renamed=renamed)
    for d in cfg.directions:
        if not (d.name and d.pool and d.target):
            raise MedfoundryError(
                f"{name_or_path}: each direction needs name, pool and target (optional target_patch)"
            )
        check_name(d.name, f"{name_or_path}: direction name")  # it names a folder of the output
    check_config(cfg.train)
    if not 0 <= cfg.head_warmup_fraction < 1:
        raise MedfoundryError(
            f"{name_or_path}: head_warmup_fraction must be in [0, 1), got {cfg.head_warmup_fraction}"
        )
    return cfg


def run_transfer_benchmark(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: TransferBenchConfig,
    only: list[str] | None = None,
    jobs: int = 2,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """Run every direction (or those named in ``only``); returns ``{direction: table rows}``."""
    spec = real_data_spec(data_dir)
    out = Path(out_dir)
    tables = {}
    for d in cfg.directions:
        if only and d.name not in only:
            continue
        tables[d.name] = _direction(spec, d, out / d.name, cfg, jobs, progress)
    return tables


def _direction(spec, d: Direction, out: Path, cfg, jobs, progress) -> list[dict]:
    from medfoundry.transfer.finetune import prepare_target, train_or_resume

    by_name = {x.name: x for x in spec.datasets}
    missing = [n for n in [*d.pool, d.target] if n not in by_name]
    if missing:
        raise MedfoundryError(f"{d.name}: unknown dataset(s) {missing} (have {sorted(by_name)})")
    pool_spec = dataclasses.replace(
        spec, name=f"{d.name}-pool", datasets=[by_name[n] for n in d.pool]
    )
    target_spec = dataclasses.replace(spec, name=d.target, datasets=[by_name[d.target]])
    pool_dir = out / "pool"
    if not (pool_dir / "preprocessed" / "manifest.json").is_file():
        build_pool(pool_spec, pool_dir, jobs=jobs, progress=progress)
        make_plan(
            pool_dir,
            model=cfg.train.model,
            patch_size_vox=cfg.pretrain_patch,
            batch_size=cfg.train.batch_size,
        )
        preprocess_pool(pool_dir, jobs=jobs, progress=progress)
    target_dir = out / "target"
    if not (target_dir / "preprocessed" / "manifest.json").is_file():
        prepare_target(
            target_spec, target_dir, cfg.train.model, 8.0, d.target_patch, jobs, progress
        )
    pre_cfg = cfg.run_config(4, cfg.pretrain_patch, 1, iters=max(1, cfg.pretrain_steps // 4))
    pre = train_or_resume(out / "pretrain", pool_dir, pre_cfg, None, progress)
    rows = []
    for k in cfg.ks:
        for kind, source in (
            ("fine-tuned", find_checkpoint(pre, "final")),
            ("from scratch", None),
        ):
            run = out / f"{'finetune' if source else 'scratch'}_k{k}"
            tcfg = cfg.run_config(k, d.target_patch, k)
            if source:
                tcfg.head_warmup_steps = int(cfg.head_warmup_fraction * k * tcfg.iters_per_epoch)
            rows.append(
                _row(kind, k, train_or_resume(run, target_dir, tcfg, source, progress), d.target)
            )
    full_cfg = cfg.run_config(cfg.full_epochs, d.target_patch, cfg.full_val_every)
    full = train_or_resume(out / "scratch_full", target_dir, full_cfg, None, progress)
    rows.append(_row("from scratch (full)", cfg.full_epochs, full, d.target))
    _write_table(out, d, rows, cfg)
    return rows


def _row(kind: str, epochs: int, run: Path, dataset: str) -> dict:
    from medfoundry.runs.metrics import read_metrics

    rows = read_metrics(run)
    vals = [r for r in rows if r["kind"] == "val"]
    if not vals:
        raise MedfoundryError(f"{run}: no validation was logged (the preset turns it off)")
    val = ([r for r in vals if r.get("final")] or vals)[-1]  # the final weights, whole volumes
    steps = max(r["step"] for r in rows if r["kind"] == "train")
    train_s = sum(r["step_time_s"] for r in rows if r["kind"] == "train")
    prefix = f"val/{dataset}/"
    return {
        "run": kind,
        "epochs": epochs,
        "steps": steps,
        "train_min": round(train_s / 60, 1),
        **{k[len(prefix) :]: v for k, v in val.items() if k.startswith(prefix)},
    }


def _write_table(out: Path, d: Direction, rows: list[dict], cfg) -> None:
    cols = [
        "run",
        "epochs",
        "steps",
        "train_min",
        *[c for c in rows[0] if c not in ("run", "epochs", "steps", "train_min", "mean")],
        "mean",
    ]
    with atomic_path(out / "table.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows([[r.get(c, "") for c in cols] for r in rows])
    full, t = rows[-1]["mean"], cfg.train
    lines = [
        f"### {d.name}: pretrain on {', '.join(d.pool)}, transfer to {d.target}",
        "",
        f"Validation Dice of the final weights on {d.target} (<= {t.validation.max_cases} held-out "
        f"whole volumes); an epoch is {t.iters_per_epoch} iterations of batch {t.batch_size}.",
        "",
        "| " + " | ".join(cols) + " | % of full |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for r in rows:
        cells = [
            f"{r[c]:.3f}" if isinstance(r.get(c), float) and c != "train_min" else str(r.get(c, ""))
            for c in cols
        ]
        share = f"{100 * r['mean'] / full:.0f}%" if full else "n/a"
        lines.append("| " + " | ".join(cells) + f" | {share} |")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot(out, rows, cfg)


def _plot(out: Path, rows: list[dict], cfg) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, marker in (("fine-tuned", "o"), ("from scratch", "s")):
        pts = [(r["epochs"], r["mean"]) for r in rows if r["run"] == kind]
        ax.plot(*zip(*pts, strict=True), marker=marker, label=kind)
    ax.axhline(
        rows[-1]["mean"],
        color="grey",
        linestyle="--",
        label=f"from scratch, {cfg.full_epochs} epochs",
    )
    ax.set_xlabel("epochs on the target")
    ax.set_ylabel("validation mean Dice")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "transfer.png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
