"""What a run writes as it goes: ``metrics.jsonl`` (one JSON object per line), TensorBoard event files,
and a ``progress.png`` plot of loss, learning rate and validation Dice."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medfoundry.utils.atomic import atomic_path


class RunLog:
    """Append metrics; only created on rank 0."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        step = record.get("step", 0)
        for k, v in record.items():
            if isinstance(v, int | float) and k not in ("step", "epoch"):
                self.tb.add_scalar(k, v, step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint's step (they will be logged again), and
        a line a kill cut short."""
        if not self.path.is_file():
            return
        keep = [r for r in read_metrics(self.run_dir) if r.get("step", 0) <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def close(self) -> None:
        self.tb.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``metrics.jsonl`` (a line a kill cut short is left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_progress(run_dir: Path) -> Path:
    """``progress.png``: training loss (and its moving average) and lr per step; validation Dice
    during training (lines) and of the final weights on whole volumes (crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    train = [r for r in rows if r.get("kind") == "train"]
    val = [r for r in rows if r.get("kind") == "val" and not r.get("final")]
    full = [r for r in rows if r.get("kind") == "val" and r.get("final")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r["step"] for r in train]
        loss = [r["loss"] for r in train]
        axes[0].plot(steps, loss, alpha=0.3, label="loss")
        k = max(1, len(loss) // 50)
        smooth = [
            sum(loss[max(0, i - k) : i + 1]) / len(loss[max(0, i - k) : i + 1])
            for i in range(len(loss))
        ]
        axes[0].plot(steps, smooth, label="loss (moving mean)")
        ax2 = axes[0].twinx()
        ax2.plot(steps, [r["lr"] for r in train], color="grey", linestyle=":", label="lr")
        ax2.set_ylabel("lr")
        axes[0].set_xlabel("step")
        axes[0].legend(loc="upper right")
    keys = sorted(
        {k for r in val + full for k in r if k.startswith("val/") and k.endswith("/mean")}
    )
    for i, key in enumerate(keys):
        colour = f"C{i % 10}"
        axes[1].plot(
            [r["step"] for r in val if key in r],
            [r[key] for r in val if key in r],
            marker="o",
            color=colour,
            label=key[4:-5] or "all",
        )
        ends = [(r["step"], r[key]) for r in full if key in r]
        if ends:
            axes[1].scatter(*zip(*ends, strict=True), marker="x", s=60, color=colour)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation Dice (x: whole volumes)")
    axes[1].set_ylim(0, 1)
    if val or full:
        axes[1].legend(loc="lower right")
    fig.tight_layout()
    out = run_dir / "progress.png"
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return out
