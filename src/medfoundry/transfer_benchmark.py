"""``medfoundry benchmark transfer``: TSFM's Table 2 on your data.

Per direction: pretrain on a pool without the target dataset, then fine-tune on the target for k
short epochs for each k, train the same model from scratch for the same k epochs, and train it from
scratch for a much longer budget (the "full training" reference). Every run validates on the same
held-out split of the target (the split is drawn from the target pool with the same seed). Output per
direction: ``table.md``, ``table.csv`` (Dice per class and mean for each k) and ``transfer.png``.
Every run folder is reused when finished and resumed when not, so the command can be rerun after a kill.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from importlib import resources
from pathlib import Path

import yaml

from medfoundry import MedfoundryError
from medfoundry.pipeline import real_data_spec
from medfoundry.planning import make_plan
from medfoundry.pool import build_pool
from medfoundry.preprocessing import preprocess_pool

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Direction:
    name: str
    pool: list[str]
    target: str
    target_patch: list[int] | None = None


@dataclasses.dataclass
class TransferBenchConfig:
    model: str = "tsfm_s"
    batch_size: int = 4
    lr: float = 0.01
    pretrain_steps: int = 1200
    pretrain_patch: list[int] | None = None
    iters_per_epoch: int = 25
    ks: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 5, 10])
    full_epochs: int = 50
    full_val_every: int = 10
    val_cases: int = 20
    head_warmup_fraction: float = 0.0
    """Share of each fine-tuning run's steps that trains the new head alone (``head_warmup_steps``)."""
    directions: list[Direction] = dataclasses.field(default_factory=list)


def load_bench_config(name_or_path: str) -> TransferBenchConfig:
    path = Path(name_or_path)
    if path.is_file():
        raw = yaml.safe_load(path.read_text())
    else:
        res = resources.files("medfoundry").joinpath("presets", f"{name_or_path}.yaml")
        if not res.is_file():
            raise MedfoundryError(f"preset '{name_or_path}' not found")
        raw = yaml.safe_load(res.read_text())
    if not isinstance(raw, dict):
        raise MedfoundryError(f"{name_or_path}: a benchmark preset must be a YAML mapping")
    known = {f.name for f in dataclasses.fields(TransferBenchConfig)}
    if unknown := set(raw) - known:
        raise MedfoundryError(f"unknown benchmark key(s) {sorted(unknown)}")
    raw["directions"] = [_direction_spec(name_or_path, d) for d in raw.get("directions") or []]
    cfg = TransferBenchConfig(**raw)
    if not 0 <= cfg.head_warmup_fraction < 1:
        raise MedfoundryError(
            f"{name_or_path}: head_warmup_fraction must be in [0, 1), got {cfg.head_warmup_fraction}"
        )
    return cfg


def _direction_spec(source: str, raw) -> Direction:
    fields = {f.name for f in dataclasses.fields(Direction)}
    if not isinstance(raw, dict) or not {"name", "pool", "target"} <= set(raw) <= fields:
        raise MedfoundryError(
            f"{source}: each direction needs name, pool and target (optional target_patch), got {raw!r}"
        )
    return Direction(**raw)


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
            pool_dir, model=cfg.model, patch_size_vox=cfg.pretrain_patch, batch_size=cfg.batch_size
        )
        preprocess_pool(pool_dir, jobs=jobs, progress=progress)
    target_dir = out / "target"
    if not (target_dir / "preprocessed" / "manifest.json").is_file():
        prepare_target(target_spec, target_dir, cfg.model, 8.0, d.target_patch, jobs, progress)
    per_epoch = max(1, cfg.pretrain_steps // 4)
    pre_cfg = _cfg(cfg, 4, per_epoch, cfg.pretrain_patch, 1)
    pre = train_or_resume(out / "pretrain", pool_dir, pre_cfg, None, progress)
    rows = []
    for k in cfg.ks:
        for kind, source in (
            ("fine-tuned", pre / "checkpoints" / "final.pt"),
            ("from scratch", None),
        ):
            run = out / f"{'finetune' if source else 'scratch'}_k{k}"
            tcfg = _cfg(cfg, k, cfg.iters_per_epoch, d.target_patch, k)
            if source:
                tcfg.head_warmup_steps = int(cfg.head_warmup_fraction * k * cfg.iters_per_epoch)
            rows.append(
                _row(kind, k, train_or_resume(run, target_dir, tcfg, source, progress), d.target)
            )
    full_cfg = _cfg(cfg, cfg.full_epochs, cfg.iters_per_epoch, d.target_patch, cfg.full_val_every)
    full = train_or_resume(out / "scratch_full", target_dir, full_cfg, None, progress)
    rows.append(_row("from scratch (full)", cfg.full_epochs, full, d.target))
    _write_table(out, d, rows, cfg)
    return rows


def _cfg(b: TransferBenchConfig, epochs: int, iters: int, patch, val_every: int):
    from medfoundry.pipeline import cpu_train_config

    return cpu_train_config(
        b.model, epochs, iters, patch, b.batch_size, b.lr, b.val_cases, val_every
    )


def _row(kind: str, epochs: int, run: Path, dataset: str) -> dict:
    from medfoundry.training.runlog import read_metrics

    rows = read_metrics(run)
    val = [r for r in rows if r["kind"] == "val"][-1]
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
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows([[r.get(c, "") for c in cols] for r in rows])
    full = rows[-1]["mean"]
    lines = [
        f"### {d.name}: pretrain on {', '.join(d.pool)}, transfer to {d.target}",
        "",
        f"Validation Dice on {d.target} (<= {cfg.val_cases} held-out cases); an epoch is {cfg.iters_per_epoch} iterations of batch {cfg.batch_size}.",
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
    (out / "table.md").write_text("\n".join(lines) + "\n")
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
    fig.savefig(out / "transfer.png", dpi=90)
    plt.close(fig)
