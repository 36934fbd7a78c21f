"""``medfoundry benchmark interactive``: the field's interactive protocol on held-out cases.

Per case and structure (:mod:`.interactive_eval`): Dice after 1, 2, 3, 5 and 10 simulated clicks and
from one box, NoC@85 and NoC@90, the set-volume time and the time of each click; in the same run the
automatic mode of the same model (for structures among its classes: "seen") and the classical
baseline (SimpleITK region growing from its own simulated clicks). A structure is "seen" when its
name is one of the model's classes, else "unseen" (the prompted channel alone can segment it).

Writes ``cases.csv`` (one row per case and structure), ``table.md`` / ``table.csv`` (mean over cases
per structure), ``clicks.png`` (Dice against clicks) and ``cases/<case>.json``; a case whose JSON
exists is kept, so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.evaluation.evaluate import list_cases
from medfoundry.evaluation.metrics import dice_score
from medfoundry.inference.interactive import InteractiveSession
from medfoundry.inference.predict_files import group_inputs
from medfoundry.inference.predictor import Predictor
from medfoundry.io import read_image, read_label
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.names import path_inside
from medfoundry.workflows.fewshot_table import write_csv
from medfoundry.workflows.interactive_eval import (
    CLICK_COUNTS,
    baseline_curve,
    box_dice,
    click_curve,
    clicks_to_reach,
)

log = logging.getLogger(__name__)


def parse_structure(text: str) -> tuple[str, list[int]]:
    """``NAME=ID[,ID...]`` (a structure: the union of those label ids of the references)."""
    name, _, ids = text.partition("=")
    try:
        values = [int(v) for v in ids.split(",") if v.strip()]
    except ValueError:
        values = []
    if not name.strip() or not values or min(values) < 1:
        raise MedfoundryError(f"--structure {text!r}: give NAME=ID[,ID...] with label ids >= 1")
    return name.strip(), values


def run_interactive_benchmark(
    model: str | os.PathLike,
    images: str | os.PathLike,
    labels: str | os.PathLike,
    structures: dict[str, list[int]],
    out_dir: str | os.PathLike,
    clicks: int = 10,
    max_cases: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    dataset: str | None = None,
    auto_start: bool = True,
) -> list[dict]:
    """Benchmark ``model`` on the cases of ``images`` with same-named references in ``labels``
    (``dataset``: a pool model's dataset whose preprocessing to use; ``auto_start``: see
    :class:`InteractiveSession`); returns the rows of ``cases.csv``."""
    if clicks < 1:
        raise MedfoundryError("--clicks must be >= 1")
    refs = list_cases(Path(labels))
    inputs = {c: f for c, (f, _) in group_inputs(images).items() if c in refs}
    if not inputs:
        raise MedfoundryError(f"no image of {images} has a same-named reference in {labels}")
    cases = sorted(inputs)[:max_cases]
    out = Path(out_dir)
    session = InteractiveSession.from_checkpoint(model, device, auto_start, dataset=dataset)
    auto = _automatic(session, structures)
    rows = []
    for case in tqdm(cases, desc="cases", unit="case", disable=not progress):
        done = path_inside(out, "cases", f"{case}.json")
        if not done.is_file():
            result = _case(session, auto, inputs[case], refs[case], structures, clicks)
            with atomic_path(done) as tmp:
                tmp.write_text(json.dumps({"case": case, "rows": result}, indent=1) + "\n")
        rows += json.loads(done.read_text())["rows"]
    write_csv(out / "cases.csv", rows)
    write_interactive_table(out, rows, clicks, str(model))
    return rows


def _automatic(session: InteractiveSession, structures: dict) -> Predictor | None:
    """The same model's automatic mode over the structures it knows by name (None: it knows none)."""
    p = session.predictor
    seen = [n for n in structures if n in p.class_names]
    if not seen:
        return None
    return Predictor.from_checkpoint(
        p.checkpoint_path, str(p.device), mirror=False, classes=seen, dataset=p.options.dataset
    )


def _case(session, auto, image_files, ref_file, structures, clicks) -> list[dict]:
    image = read_image(image_files)
    ref = read_label(ref_file).array[0]
    if ref.shape != image.shape_zyx:
        raise MedfoundryError(f"{ref_file}: shape {ref.shape} differs from its image's")
    session.set_volume(image)
    set_s = session.timings["set_volume_s"]
    auto_labels = None if auto is None else auto.predict(image).labels.array[0]
    rows = []
    for name, ids in structures.items():
        target = np.isin(ref, ids)
        if not target.any():
            continue
        curve = click_curve(session, target, clicks)
        box, box_s = box_dice(session, target)
        base = baseline_curve(image.array[0], target, clicks)
        row = {
            "case": Path(ref_file).name.split(".")[0],
            "structure": name,
            "seen": auto is not None and name in auto.class_names,
            "voxels": int(target.sum()),
            "set_volume_s": round(set_s, 3),
            "click_s_median": round(statistics.median(curve["seconds"]), 4),
            "click_s_max": round(max(curve["seconds"]), 4),
            **{f"dice@{k}": round(curve["dice"][k - 1], 4) for k in CLICK_COUNTS if k <= clicks},
            "dice_box": round(box, 4),
            "box_s": round(box_s, 4),
            "noc85": clicks_to_reach(curve["dice"], 0.85),
            "noc90": clicks_to_reach(curve["dice"], 0.90),
            "auto": None,
            **{f"grow@{k}": round(base[k - 1], 4) for k in CLICK_COUNTS if k <= clicks},
            "curve": curve["dice"],
            "grow_curve": base,
        }
        if row["seen"]:
            out_id = auto.output_ids[auto.class_names.index(name)]
            row["auto"] = round(dice_score(auto_labels == out_id, target), 4)
        rows.append(row)
    return rows


def summarise_interactive(rows: list[dict]) -> list[dict]:
    """Per structure: the mean over cases of every numeric column (curves averaged per click)."""
    out = []
    for name in dict.fromkeys(r["structure"] for r in rows):
        group = [r for r in rows if r["structure"] == name]
        row = {"structure": name, "seen": group[0]["seen"], "cases": len(group)}
        for col in group[0]:
            values = [
                r[col] for r in group if isinstance(r[col], int | float) and r[col] is not None
            ]
            if col in ("seen", "voxels") or not values or isinstance(group[0][col], bool):
                continue
            row[col] = round(float(np.mean(values)), 4)
        for col in ("curve", "grow_curve"):
            row[col] = np.mean([r[col] for r in group], axis=0).round(4).tolist()
        out.append(row)
    return out


def write_interactive_table(out: Path, rows: list[dict], clicks: int, model: str) -> None:
    """``table.csv``, ``table.md`` and ``clicks.png`` from the case rows."""
    table = summarise_interactive(rows)
    flat = [{k: v for k, v in r.items() if not k.endswith("curve")} for r in table]
    write_csv(out / "table.csv", flat)
    ks = [k for k in CLICK_COUNTS if k <= clicks]
    head = ["structure", "seen", "cases", *(f"Dice@{k}" for k in ks), "box", "NoC85", "NoC90"]
    head += ["automatic", *(f"grow@{k}" for k in (1, 5, clicks) if k <= clicks)]
    head += ["set volume s", "click s (median)"]
    lines = [
        f"### Interactive segmentation: {Path(model).name}",
        "",
        "Mean over held-out cases, at the input grid. NoC: simulated clicks to reach Dice 0.85 / "
        f"0.90 ({clicks + 1} = not within {clicks}). automatic: the same model without prompts; "
        "grow: SimpleITK region growing from its own simulated clicks.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table:
        cells = [r["structure"], "yes" if r["seen"] else "no", str(r["cases"])]
        cells += [_f(r.get(f"dice@{k}")) for k in ks]
        cells += [_f(r.get("dice_box")), _f(r.get("noc85"), 1), _f(r.get("noc90"), 1)]
        cells += [
            _f(r.get("auto")),
            *(_f(r.get(f"grow@{k}")) for k in (1, 5, clicks) if k <= clicks),
        ]
        cells += [_f(r.get("set_volume_s"), 3), _f(r.get("click_s_median"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot(out / "clicks.png", table)


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _plot(path: Path, table: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, r in enumerate(table):
        color = f"C{i % 10}"
        x = range(1, len(r["curve"]) + 1)
        tag = "" if r["seen"] else " (unseen)"
        ax.plot(x, r["curve"], marker="o", color=color, label=f"{r['structure']}{tag}")
        ax.plot(x, r["grow_curve"], ls="--", color=color, alpha=0.6)
        if r.get("auto") is not None:
            ax.axhline(r["auto"], ls=":", color=color, alpha=0.8)
    ax.set_xlabel("simulated clicks")
    ax.set_ylabel("Dice (mean over cases)")
    ax.set_ylim(0, 1)
    ax.set_title("solid: model, dashed: region growing, dotted: automatic")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
