"""``medfoundry review queue``: rank cases by how unsure the models are, so a person corrects the
cases most likely wrong first.

Scores (higher: review sooner):

- Two or more models (checkpoints, folds; one label space): each predicts each case
  (:meth:`Predictor.predict`). ``score`` is ``model_disagreement`` = 1 - the mean, over model pairs,
  of the pair's mean Dice over the foreground classes either model of the pair predicts (a pair that
  predicts no foreground at all agrees: Dice 1). Per voxel, the disagreement map is the share of
  models whose label differs from the consensus (:func:`consensus_labels`: majority vote, a tie goes
  to the earliest model given, so with two models the consensus is the first model's labels); a
  voxel disagrees when that share is above 0.
- One model: test-time mirroring (:func:`predict_with_uncertainty`). ``score`` is its
  ``mean_entropy_fg`` (the score that ranks lowest-Dice cases best in ``medfoundry benchmark
  uncertainty``); its other scores are kept as columns. The disagreement map is the predictive
  entropy (nats); a voxel disagrees above :data:`DOUBT_ENTROPY_NATS`.

Files in ``QUEUE``: ``queue.csv`` and ``queue.html`` (rank order, :mod:`.review_html`),
``png/<case>.png`` (the axial slice with the most disagreement), ``predictions/<case>.nii.gz`` (the
consensus labels, the input's geometry; with 2+ models also ``predictions/model<i>/<case>.nii.gz``),
``disagreement/<case>.nii.gz`` (float32 map above), ``cases/<case>.json`` (per-case record: a rerun
keeps a case whose models, settings, inputs and output files are unchanged). With reference labels,
each case's ``dice`` (mean over the classes its reference holds, of the consensus labels) and
``evaluation.json``: Spearman's rho of ``score`` with Dice and how many of the top quarter of the
queue are among the quarter with the lowest Dice, with chance level (:func:`rank_table`).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medfoundry import MedfoundryError
from medfoundry.evaluation.evaluate import list_cases
from medfoundry.evaluation.metrics import dice_score
from medfoundry.inference.predict_files import check_finite, group_inputs
from medfoundry.inference.prediction_record import describe_inputs, sha256_file
from medfoundry.inference.predictor import Predictor
from medfoundry.inference.uncertainty import SCORES, predict_with_uncertainty
from medfoundry.io import read_image, read_label, write_volume
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.names import check_name, path_inside
from medfoundry.workflows.fewshot_table import write_csv
from medfoundry.workflows.review_html import save_case_png, write_queue_html
from medfoundry.workflows.uncertainty import rank_table, reference_dice

log = logging.getLogger(__name__)
CASE_FORMAT = "medfoundry.review_case/1"
DOUBT_ENTROPY_NATS = 0.325
"""One model: a voxel disagrees when its predictive entropy is at least that of a 90:10 split
between two classes (-0.9 ln 0.9 - 0.1 ln 0.1 = 0.325 nats)."""


def build_review_queue(
    models: list[str | os.PathLike],
    images: str | os.PathLike,
    queue_dir: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    dataset: str | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Score every case of ``images`` (a file or folder, as ``medfoundry predict`` reads it) with
    ``models`` (one: test-time mirroring; more: their disagreement), write the queue into
    ``queue_dir`` and return ``{"rows": [...] in rank order, "evaluation": {...} or None, ...}``."""
    if not models:
        raise MedfoundryError("give at least one model (-m)")
    inputs = group_inputs(images)
    for case in inputs:
        check_name(case, f"{images}: case name")
    refs = _references(labels, inputs) if labels is not None else {}
    predictors = [Predictor.from_checkpoint(m, device, dataset=dataset) for m in models]
    _check_same_outputs(predictors, models)
    key = {
        "format": CASE_FORMAT,
        "models": [p.model_sha256 for p in predictors],
        "settings": [p.output_settings() for p in predictors],
    }
    out = Path(queue_dir)
    rows = []
    for case, (files, _) in tqdm(inputs.items(), desc="review", unit="case", disable=not progress):
        expected = {**key, "inputs": describe_inputs(files)}
        record = _kept_record(out, case, expected) or _score_case(
            predictors, case, files, out, expected
        )
        rows.append(record["row"])
    for row in rows:
        if row["case"] in refs:
            row["dice"] = _case_dice(out, row["case"], refs[row["case"]], predictors[0].output_ids)
    rows = rank_rows(rows)
    evaluation = evaluate_queue(rows) if refs else None
    if evaluation is None:  # an older one would describe another run
        (out / "evaluation.json").unlink(missing_ok=True)
    else:
        with atomic_path(out / "evaluation.json") as tmp:
            tmp.write_text(json.dumps(evaluation, indent=1) + "\n")
    write_csv(out / "queue.csv", rows)
    html = write_queue_html(out, rows, _rule(len(predictors)), evaluation)
    return {
        "rows": rows,
        "evaluation": evaluation,
        "csv": str(out / "queue.csv"),
        "html": str(html),
        "queue_dir": str(out),
    }


def consensus_labels(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote over models. ``stack``: ``(M, Z, Y, X)`` integer label maps. Returns the
    consensus ``(Z, Y, X)`` (same dtype; a tie goes to the earliest model) and the float32 share of
    models whose label differs from it ``(Z, Y, X)``, in ``[0, 1 - 1/M]``."""
    labels = stack[0].copy()
    votes = (stack == stack[0]).sum(axis=0)
    for other in stack[1:]:
        count = (stack == other).sum(axis=0)
        better = count > votes
        labels[better] = other[better]
        votes[better] = count[better]
    return labels, (1.0 - votes / stack.shape[0]).astype(np.float32)


def mean_pairwise_dice(stack: np.ndarray, ids: list[int]) -> float:
    """Mean over model pairs of the pair's mean Dice over the ``ids`` either model predicts
    (``stack``: ``(M, Z, Y, X)`` label maps, ``M >= 2``); a pair with no such class scores 1."""
    pairs = []
    for a, b in itertools.combinations(range(stack.shape[0]), 2):
        dices = [dice_score(stack[a] == i, stack[b] == i) for i in ids]
        dices = [d for d in dices if not math.isnan(d)]  # both empty: no class to compare
        pairs.append(float(np.mean(dices)) if dices else 1.0)
    return float(np.mean(pairs))


def rank_rows(rows: list[dict]) -> list[dict]:
    """``rows`` by descending ``score`` (ties by case name), each given its 1-based ``rank`` first."""
    ordered = sorted(rows, key=lambda r: (-r["score"], r["case"]))
    return [
        {"rank": i, **{k: v for k, v in r.items() if k != "rank"}} for i, r in enumerate(ordered, 1)
    ]


def evaluate_queue(rows: list[dict]) -> dict:
    """Of the rows with a ``dice`` (in rank order): Spearman's rho of ``score`` with Dice (negative
    when the top of the queue holds the low-Dice cases), its p-value, and how many of the top quarter
    (``floor(n / 4)``, at least 1) are among the same number of lowest-Dice cases (ties broken by
    queue order), with the count expected by chance (``k * k / n``). The same figures for every
    other score column follow under ``other_scores``."""
    scored = [r for r in rows if r.get("dice") is not None]
    if not scored:
        raise MedfoundryError("no case has a reference label with foreground to score against")
    main = rank_table(scored, ("score",))[0]
    others = [s for s in SCORES if s in scored[0]]  # one model: its other TTA scores
    hits, k = (int(v) for v in main["worst_quarter_hits"].split("/"))
    return {
        "cases": len(scored),
        "score": scored[0]["score_name"],
        "spearman_rho": _number(main["spearman"]),
        "p_value": _number(main["p_value"]),
        "top_quarter": k,
        "top_quarter_hits": hits,
        "chance_hits": main["chance_hits"],
        "other_scores": [
            {**r, "spearman": _number(r["spearman"]), "p_value": _number(r["p_value"])}
            for r in rank_table(scored, tuple(others))
        ],
        "dice_rule": "mean Dice of the consensus labels over the classes the reference holds",
    }


def _number(v: float) -> float | None:
    return None if v is None or math.isnan(v) else v


def _references(labels: str | os.PathLike, inputs: dict) -> dict[str, Path]:
    refs = {c: p for c, p in list_cases(Path(labels)).items() if c in inputs}
    if not refs:
        raise MedfoundryError(
            f"{labels}: no label file is named like an image case (<case>.nii.gz)"
        )
    return refs


def _check_same_outputs(predictors: list[Predictor], models: list) -> None:
    first = predictors[0]
    for p, m in zip(predictors[1:], models[1:], strict=True):
        if p.output_ids != first.output_ids or p.class_names != first.class_names:
            raise MedfoundryError(
                f"{m}: predicts {dict(zip(p.class_names, p.output_ids, strict=True))}, "
                f"{models[0]} {dict(zip(first.class_names, first.output_ids, strict=True))}: "
                "models of one queue must share their classes (use --dataset for pool models)"
            )


def _rule(n_models: int) -> str:
    if n_models == 1:
        return (
            "score = mean predictive entropy (nats) over the voxels any mirrored pass calls "
            f"foreground (test-time mirroring of one model); highlighted: entropy >= "
            f"{DOUBT_ENTROPY_NATS} nats"
        )
    return (
        f"score = 1 - mean pairwise Dice between the {n_models} models' label maps (mean over the "
        "foreground classes either model of a pair predicts); highlighted: voxels where a model "
        "differs from the consensus"
    )


def _outputs(out: Path, case: str, n_models: int) -> dict[str, Path]:
    """The files of one case (relative name -> path), every one inside ``out``."""
    names = [f"predictions/{case}.nii.gz", f"disagreement/{case}.nii.gz", f"png/{case}.png"]
    if n_models > 1:
        names += [f"predictions/model{i}/{case}.nii.gz" for i in range(n_models)]
    return {n: path_inside(out, *n.split("/")) for n in names}


def _kept_record(out: Path, case: str, expected: dict) -> dict | None:
    """The case's record when it was made the same way and its outputs are intact, else None."""
    path = path_inside(out, "cases", f"{case}.json")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in expected.items()):
        return None
    files = _outputs(out, case, len(expected["models"]))
    recorded = record.get("outputs") or {}
    for name, p in files.items():
        if not p.is_file() or recorded.get(name) != sha256_file(p):
            return None
    return record


def _score_case(predictors: list[Predictor], case: str, files, out: Path, key: dict) -> dict:
    image = read_image(files)
    check_finite(image, files)
    if len(predictors) == 1:
        result = predict_with_uncertainty(predictors[0], image)
        labels, dmap = result.labels, result.entropy
        scores = {k: round(v, 6) for k, v in result.scores.items()}
        score, name, members = scores["mean_entropy_fg"], "mean_entropy_fg", []
        highlight = dmap.array[0] >= DOUBT_ENTROPY_NATS
    else:
        members = [p.predict(image, name=case).labels for p in predictors]
        stack = np.stack([m.array[0] for m in members])  # (M, Z, Y, X)
        consensus, share = consensus_labels(stack)
        labels, dmap = members[0].with_array(consensus[None]), image.with_array(share[None])
        agree = mean_pairwise_dice(stack, predictors[0].output_ids)
        scores = {"mean_pairwise_dice": round(agree, 6)}
        score, name = round(1.0 - agree, 6), "model_disagreement"
        highlight = share > 0
    paths = _outputs(out, case, len(predictors))
    path_inside(out, "cases", f"{case}.json").unlink(missing_ok=True)  # never vouches for old files
    write_volume(labels, paths[f"predictions/{case}.nii.gz"])
    write_volume(dmap, paths[f"disagreement/{case}.nii.gz"])
    for i, m in enumerate(members):
        write_volume(m, paths[f"predictions/model{i}/{case}.nii.gz"])
    save_case_png(
        image,
        labels.array[0],
        highlight,
        dmap.array[0],
        paths[f"png/{case}.png"],
        f"{case}: score {score:.4f}",
    )
    row = {
        "case": case,
        "score": score,
        "score_name": name,
        "n_models": len(predictors),
        **scores,
        "disagreeing_voxels": int(highlight.sum()),
        "image": ";".join(os.path.abspath(f) for f in files),
        "prediction": f"predictions/{case}.nii.gz",
        "model_predictions": ";".join(n for n in paths if n.startswith("predictions/model")),
        "disagreement": f"disagreement/{case}.nii.gz",
        "png": f"png/{case}.png",
    }
    record = {**key, "row": row, "outputs": {n: sha256_file(p) for n, p in paths.items()}}
    with atomic_path(path_inside(out, "cases", f"{case}.json")) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")  # last: marks the case done
    return record


def _case_dice(out: Path, case: str, ref_file: Path, ids: list[int]) -> float | None:
    pred = read_label(path_inside(out, "predictions", f"{case}.nii.gz")).array[0]
    ref = read_label(ref_file).array[0]
    if ref.shape != pred.shape:
        raise MedfoundryError(
            f"{ref_file}: shape {ref.shape} differs from its image's {pred.shape}"
        )
    dice = reference_dice(pred, ref, ids)
    return None if dice is None else round(dice, 5)


def queue_images(queue_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """``{case: [image files]}`` of the cases a queue scored (from ``QUEUE/cases/*.json``)."""
    found = {}
    for path in sorted(Path(queue_dir, "cases").glob("*.json")):
        try:
            row = json.loads(path.read_text())["row"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found[row["case"]] = [Path(p) for p in row["image"].split(";")]
    return found
