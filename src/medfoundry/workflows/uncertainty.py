"""``medfoundry uncertainty`` (label map + entropy map + scores per image) and ``medfoundry benchmark
uncertainty``: does a case's uncertainty score rank the cases with the lowest Dice first?

The benchmark predicts every held-out case with test-time mirroring
(:func:`~medfoundry.inference.uncertainty.predict_with_uncertainty`), scores the prediction against
its reference (mean Dice over the classes the reference holds), and reports per score the Spearman
correlation with Dice (negative: higher uncertainty, lower Dice) and how many of the quarter of cases
it ranks most uncertain are among the quarter with the lowest Dice (chance: a quarter). Files:
``cases/<case>.json`` (kept: a rerun resumes), ``cases.csv``, ``table.md``, ``table.csv`` and
``uncertainty.png`` (each score against Dice).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.evaluation.evaluate import list_cases
from medfoundry.evaluation.metrics import dice_score
from medfoundry.inference.predict_files import group_inputs
from medfoundry.inference.predictor import Predictor
from medfoundry.inference.uncertainty import SCORES, predict_with_uncertainty
from medfoundry.io import read_image, read_label, write_volume
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.names import path_inside
from medfoundry.workflows.fewshot_table import write_csv


def predict_uncertainty_files(
    model: str | os.PathLike,
    inputs: str | os.PathLike,
    out_dir: str | os.PathLike,
    device: str = "cpu",
    dataset: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """For each image of ``inputs`` (a file or folder): ``<case>.nii.gz`` (labels),
    ``<case>_entropy.nii.gz`` and a row of ``scores.csv`` in ``out_dir``."""
    predictor = Predictor.from_checkpoint(model, device, dataset=dataset)
    out = Path(out_dir)
    rows = []
    for case, (files, _) in tqdm(group_inputs(inputs).items(), desc="cases", disable=not progress):
        result = predict_with_uncertainty(predictor, read_image(files))
        write_volume(result.labels, path_inside(out, f"{case}.nii.gz"))
        write_volume(result.entropy, path_inside(out, f"{case}_entropy.nii.gz"))
        rows.append({"case": case, **{k: round(v, 6) for k, v in result.scores.items()}})
    write_csv(out / "scores.csv", rows)
    return rows


def run_uncertainty_benchmark(
    model: str | os.PathLike,
    images: str | os.PathLike,
    labels: str | os.PathLike,
    out_dir: str | os.PathLike,
    max_cases: int | None = None,
    device: str = "cpu",
    dataset: str | None = None,
    progress: bool = True,
) -> dict:
    """Benchmark the scores on the cases of ``images`` with same-named references in ``labels``;
    returns the table (per score: ``spearman``, its ``p_value`` and ``worst_quarter_hits``)."""
    refs = list_cases(Path(labels))
    inputs = {c: f for c, (f, _) in group_inputs(images).items() if c in refs}
    if len(inputs) < 4:
        raise MedfoundryError(f"{images}: need at least 4 images with references in {labels}")
    cases = sorted(inputs)[:max_cases]
    predictor = Predictor.from_checkpoint(model, device, dataset=dataset)
    out = Path(out_dir)
    rows = []
    for case in tqdm(cases, desc="cases", unit="case", disable=not progress):
        done = path_inside(out, "cases", f"{case}.json")
        if not done.is_file():
            row = _case(predictor, case, inputs[case], refs[case], out)
            with atomic_path(done) as tmp:
                tmp.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(json.loads(done.read_text()))
    table = rank_table(rows)
    write_csv(out / "cases.csv", rows)
    write_csv(out / "table.csv", table)
    _write_markdown(out / "table.md", table, len(rows), str(model))
    _plot(out / "uncertainty.png", rows)
    return {"cases": len(rows), "table": table}


def _case(predictor: Predictor, case: str, image_files, ref_file, out: Path) -> dict:
    image = read_image(image_files)
    ref = read_label(ref_file).array[0]
    if ref.shape != image.shape_zyx:
        raise MedfoundryError(f"{ref_file}: shape {ref.shape} differs from its image's")
    result = predict_with_uncertainty(predictor, image)
    dice = reference_dice(result.labels.array[0], ref, predictor.output_ids)
    write_volume(result.entropy, path_inside(out, "maps", f"{case}_entropy.nii.gz"))
    return {
        "case": case,
        "dice": None if dice is None else round(dice, 5),
        **{k: round(v, 6) for k, v in result.scores.items()},
    }


def reference_dice(pred: np.ndarray, ref: np.ndarray, ids: list[int]) -> float | None:
    """Mean Dice of label map ``pred`` against ``ref`` (both ``(Z, Y, X)``) over the ``ids`` that
    ``ref`` holds; None when it holds none of them."""
    dices = [dice_score(pred == i, ref == i) for i in ids if (ref == i).any()]
    return float(np.mean(dices)) if dices else None


def rank_table(rows: list[dict], scores: tuple[str, ...] = SCORES) -> list[dict]:
    """Per score (a key of every row): Spearman's rho with Dice and the hits among the worst quarter
    (see module doc)."""
    rows = [r for r in rows if r["dice"] is not None]
    dice = np.array([r["dice"] for r in rows])
    k = max(1, math.floor(len(rows) / 4))
    worst = set(np.argsort(dice, kind="stable")[:k].tolist())
    table = []
    for score in scores:
        s = np.array([r[score] for r in rows])
        constant = np.ptp(s) == 0 or np.ptp(dice) == 0  # no ranking to correlate
        rho, p = (float("nan"), float("nan")) if constant else stats.spearmanr(s, dice)
        top = set(np.argsort(-s, kind="stable")[:k].tolist())
        table.append(
            {
                "score": score,
                "spearman": round(float(rho), 4),
                "p_value": float(f"{p:.3g}"),
                "worst_quarter_hits": f"{len(top & worst)}/{k}",
                "chance_hits": round(k * k / len(rows), 2),
            }
        )
    return table


def _write_markdown(path: Path, table: list[dict], n: int, model: str) -> None:
    lines = [
        f"# Uncertainty against Dice ({n} cases, model {model})",
        "",
        "| score | Spearman rho with Dice | p | worst-quarter hits | by chance |",
        "|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['score']} | {r['spearman']:.3f} | {r['p_value']:.2g} | "
            f"{r['worst_quarter_hits']} | {r['chance_hits']} |"
        )
    lines += [
        "",
        "rho < 0: the more uncertain the case, the lower its Dice. Worst-quarter hits: of the quarter "
        "of cases the score ranks most uncertain, how many are among the quarter with the lowest "
        "Dice.",
    ]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["dice"] is not None]
    fig, axes = plt.subplots(1, len(SCORES), figsize=(4 * len(SCORES), 3.6))
    for ax, score in zip(axes, SCORES, strict=True):
        ax.scatter([r[score] for r in rows], [r["dice"] for r in rows], s=14)
        ax.set_xlabel(score)
        ax.set_ylabel("mean Dice")
    fig.suptitle("Per-case uncertainty against Dice")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
