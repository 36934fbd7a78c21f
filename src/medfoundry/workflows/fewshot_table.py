"""The few-shot benchmark's outputs: every run, the table over case subsets, the plot, the budget."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from medfoundry.utils.atomic import atomic_path

STARTS = ("scratch", "supervised", "ssl", "both")


def summarise(rows: list[dict]) -> list[dict]:
    """Per n, start and recipe: the mean and spread (std over case subsets) of every Dice column."""
    cols = [c for c in rows[0] if c.startswith("dice_")] + ["mean"]
    arms = list(dict.fromkeys((r["start"], r.get("recipe", "-")) for r in rows))
    arms.sort(key=lambda a: STARTS.index(a[0]))  # stable: recipes keep the preset's order
    out = []
    for n in sorted({r["n"] for r in rows}):
        for start, recipe in arms:
            group = [
                r for r in rows if (r["n"], r["start"], r.get("recipe", "-")) == (n, start, recipe)
            ]
            if not group:
                continue
            row = {"start": start, "recipe": recipe, "n": n, "subsets": len(group)}
            row["steps"] = group[0]["steps"]
            for c in cols:
                values = [r[c] for r in group if r.get(c) is not None]
                row[c] = float(np.mean(values)) if values else None
                row[f"{c}_std"] = float(np.std(values)) if len(values) > 1 else 0.0
            row["train_min"] = round(float(np.mean([r["train_min"] for r in group])), 2)
            out.append(row)
    return out


def write_tables(out: Path, target: str, rows: list[dict], budget: dict) -> None:
    """``runs.csv``, ``table.csv``, ``table.md``, ``budget.json`` and ``fewshot.png`` in ``out``."""
    write_csv(out / "runs.csv", rows)
    table = summarise(rows)
    write_csv(out / "table.csv", table)
    dice = [c for c in table[0] if c.startswith("dice_") and not c.endswith("_std")]
    lines = [
        f"### {target}: validation Dice against labelled training cases",
        "",
        "Mean (and std over case subsets) of `medfoundry evaluate` on the fixed validation cases, at "
        "the input grid; every run trains the same steps. Training minutes: "
        f"{budget['total_min']} in all ({budget['target_runs_min']} on the target; "
        + ", ".join(f"{k} {v}" for k, v in budget["pretraining_min"].items())
        + ").",
        "",
        "| n | start | recipe | subsets | steps | " + " | ".join(dice) + " | mean | min/run |",
        "|" + "---|" * (7 + len(dice)),
    ]
    for r in table:
        cells = [_pm(r, c) for c in [*dice, "mean"]]
        lines.append(
            f"| {r['n']} | {r['start']} | {r['recipe']} | {r['subsets']} | {r['steps']} | "
            + " | ".join(cells)
            + f" | {r['train_min']} |"
        )
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_path(out / "budget.json") as tmp:
        tmp.write_text(json.dumps(budget, indent=1) + "\n")
    _plot(out / "fewshot.png", table, target)


def _pm(r: dict, c: str) -> str:
    if r[c] is None:
        return "n/a"
    return f"{r[c]:.3f} +- {r[c + '_std']:.3f}" if r["subsets"] > 1 else f"{r[c]:.3f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _plot(path: Path, table: list[dict], target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    arms = list(dict.fromkeys((r["start"], r["recipe"]) for r in table))
    recipes = {r for _, r in arms if r != "-"}
    for start, recipe in arms:
        pts = [r for r in table if (r["start"], r["recipe"]) == (start, recipe)]
        pts = [r for r in pts if r["mean"] is not None]
        label = start if len(recipes) <= 1 or recipe == "-" else f"{start} ({recipe})"
        if pts:
            ax.errorbar(
                [r["n"] for r in pts],
                [r["mean"] for r in pts],
                yerr=[r["mean_std"] for r in pts],
                marker="o",
                capsize=3,
                label=label,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled target cases")
    ax.set_ylabel("validation mean Dice")
    ax.set_title(target)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
