"""``medfoundry classify train | evaluate | predict``: image classification on the TSFM backbone.

``train`` prepares the data into ``RUN/target/`` (the source's official train and val splits; a test
split is never read), trains with the pretraining engine (checkpoints, resume, metrics log, best
checkpoint by validation AUC), then chooses the decision threshold on the validation split with the
best checkpoint (Youden's J, or the highest threshold reaching a target sensitivity), stores it in
``RUN/model.safetensors`` and evaluates that model on validation into ``RUN/val/``.
The validation sensitivity/specificity are then at a threshold chosen on those same cases (the AUCs
are not affected); ``evaluate --split test`` gives figures free of that choice.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.data.classification import load_pool_arrays, prepare_pool, read_split
from medfoundry.evaluation.classification import threshold_for_sensitivity, youden_threshold
from medfoundry.evaluation.classification_report import (
    classification_summary,
    write_classification_report,
)
from medfoundry.inference.classify import MODEL_FILE, Classifier
from medfoundry.pool import load_pool
from medfoundry.runs.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from medfoundry.runs.run_folder import RUN_DATA_DIR, check_new_run_dir
from medfoundry.training.config import TrainConfig, check_config
from medfoundry.training.fit import pretrain
from medfoundry.transfer.weights import only_groups, transfer_weights
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import write_json

log = logging.getLogger(__name__)

FINETUNE_MODES = {"full": "none", "partial": "encoder", "linear": "head-only"}
"""``--finetune`` -> the freeze policy: full fine-tuning, the bottleneck and head only (encoder
frozen), or a linear probe (the head only)."""
BODY_GROUPS = ["stem", "encoder", "bottleneck"]


def train_classifier(
    data: str | os.PathLike,
    run_dir: str | os.PathLike,
    cfg: TrainConfig | None = None,
    source: str | os.PathLike | None = None,
    finetune: str = "full",
    target_sensitivity: float | None = None,
    progress: bool = True,
) -> dict:
    """Train (or resume) a classifier on ``data`` into ``run_dir``; returns the training result
    plus ``threshold`` and the validation ``summary``."""
    run_dir = Path(run_dir)
    if find_checkpoint(run_dir, "latest") and not find_checkpoint(run_dir, "final"):
        result = pretrain(None, run_dir, resume=True, progress=progress)
    elif find_checkpoint(run_dir, "final"):
        result = {"run_dir": str(run_dir), "resumed": "finished"}
    else:
        cfg = cfg or TrainConfig(epochs=20, iters_per_epoch=100)
        if finetune not in FINETUNE_MODES:
            raise MedfoundryError(f"--finetune {finetune}: choose {', '.join(FINETUNE_MODES)}")
        check_config(cfg)
        check_new_run_dir(run_dir, f"use 'medfoundry classify train -o {run_dir}' again")
        pool_dir = prepare_pool(data, run_dir / RUN_DATA_DIR)
        _classification_config(cfg, load_pool(pool_dir), finetune)
        init = _init_from(source, cfg) if source else None
        result = pretrain(pool_dir, run_dir, cfg, progress=progress, init_model=init)
    summary, thresholds = finish_classifier(run_dir, target_sensitivity)
    return {**result, "thresholds": thresholds, "summary": summary}


def _classification_config(cfg: TrainConfig, pool: dict, finetune: str) -> None:
    """Whole-image validation every epoch on the official val split, no sliding-window pass."""
    if pool["classification"]["multilabel"]:
        cfg.task = "classification-multilabel"
    elif not cfg.task.startswith("classification"):
        cfg.task = "classification"
    cfg.validation.mode, cfg.validation.final = "patch", False
    cfg.validation.max_cases = max(cfg.validation.max_cases, len(pool["cases"]))
    cfg.freeze = FINETUNE_MODES[finetune]
    train = [c["id"] for c in pool["cases"] if c["split"] == "train"]
    val = [c["id"] for c in pool["cases"] if c["split"] == "val"]
    if val:
        cfg.data.train_cases, cfg.data.val_cases = train, val


def _init_from(source, cfg: TrainConfig):
    """Body weights (stem, encoder, bottleneck) of any medfoundry checkpoint; the head is new."""
    path = resolve_checkpoint(source)
    meta = load_checkpoint(path, weights=False).meta
    cfg.init_from = str(path.resolve())
    if meta["config"]["model"] != cfg.model:
        log.info("model size %s taken from %s", meta["config"]["model"], path)
    cfg.model, cfg.model_overrides = (
        meta["config"]["model"],
        dict(meta["config"]["model_overrides"]),
    )

    def init_model(model) -> dict:
        weights = only_groups(load_checkpoint(path).weights, model.parameter_groups(), BODY_GROUPS)
        report = transfer_weights(model, weights, [], [])
        report["source"] = cfg.init_from
        return report

    return init_model


def finish_classifier(run_dir: Path, target_sensitivity: float | None = None) -> tuple[dict, list]:
    """Choose the thresholds on the run's validation cases with the best checkpoint, write
    ``model.safetensors`` and the validation evaluation (``RUN/val/``)."""
    ckpt = load_checkpoint(resolve_checkpoint(run_dir))
    clf = Classifier.load(ckpt.path)
    pool_dir = run_dir / RUN_DATA_DIR
    by_id = {c["id"]: c for c in load_pool(pool_dir)["cases"]}
    val = [by_id[i] for i in ckpt.meta["run"]["splits"]["val"]]
    if not val:
        raise MedfoundryError(
            f"{run_dir}: the run has no validation cases to choose a threshold on"
        )
    images, labels = load_pool_arrays(pool_dir)
    index = np.array([c["index"] for c in val])
    y = labels[index]
    p = clf.probabilities(np.asarray(images[index]))
    thresholds = choose_thresholds(clf, y, p, target_sensitivity)
    meta = {**ckpt.description(), "kind": "model"}
    meta["task"] = {**meta["task"], "thresholds": thresholds}
    meta["config"] = {**meta["config"], "init_from": None}
    save_checkpoint(run_dir / MODEL_FILE, meta, ckpt.weights)
    clf = Classifier.load(run_dir / MODEL_FILE)
    cases = [c["id"].split("/", 1)[1].removeprefix(f"{c['split']}_") for c in val]  # as read
    summary = _evaluate_arrays(clf, y, p, cases, run_dir / "val", "val")
    return summary, thresholds


def choose_thresholds(clf: Classifier, y, p, target_sensitivity: float | None):
    """Binary: one threshold; multi-label: one per label; multi-class: None (arg max)."""
    if clf.task.binary:
        cols = [(y, p[:, 1])]
    elif clf.task.multilabel:
        cols = [(y[:, k], p[:, k]) for k in range(p.shape[1])]
    else:
        return None
    rule = (
        youden_threshold
        if target_sensitivity is None
        else lambda a, b: threshold_for_sensitivity(a, b, target_sensitivity)
    )
    return [float(rule(a, b)) if 0 < a.sum() < len(a) else 0.5 for a, b in cols]


def evaluate_classifier(
    model: str | os.PathLike, data: str | os.PathLike, split: str, out_dir: str | os.PathLike
) -> dict:
    """Evaluate ``model`` on ``split`` of ``data``: ``summary.json``, ``metrics.csv``,
    ``predictions.csv`` and the plots into ``out_dir``; returns the summary."""
    clf = Classifier.load(model)
    part = read_split(data, split, clf.input_shape)
    if part.labels is None:
        raise MedfoundryError(f"{data}: the '{split}' split has no labels to evaluate against")
    if part.classes != clf.classes and not str(data).endswith(".npz"):
        log.warning("the data's classes %s differ from the model's %s", part.classes, clf.classes)
    p = clf.probabilities(part.images)
    summary = _evaluate_arrays(clf, part.labels, p, part.cases, Path(out_dir), split)
    summary["data"] = Path(data).name
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def _evaluate_arrays(clf: Classifier, y, p, cases, out_dir: Path, split: str) -> dict:
    thresholds = clf.thresholds() if clf.task.binary or clf.task.multilabel else None
    summary = classification_summary(y, p, clf.classes, clf.task.multilabel, thresholds)
    summary["split"] = split
    write_classification_report(summary, y, p, out_dir)
    write_predictions(out_dir / "predictions.csv", cases, p, clf, y)
    return summary


def predict_classifier(
    model: str | os.PathLike, data: str | os.PathLike, split: str, out_csv: str | os.PathLike
) -> Path:
    """Probabilities and calls for every image of ``split`` of ``data`` (labels not needed)."""
    clf = Classifier.load(model)
    part = read_split(data, split, clf.input_shape)
    p = clf.probabilities(part.images)
    return write_predictions(Path(out_csv), part.cases, p, clf, part.labels)


def write_predictions(path: Path, cases, p: np.ndarray, clf: Classifier, labels=None) -> Path:
    """``case``, ``label`` (when known), ``probability`` (binary) or ``p_<class>`` per class, and
    ``prediction`` (the class name; multi-label: the present labels joined by ``;``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    calls = clf.calls(p)
    names = clf.classes
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        probs = ["probability"] if clf.task.binary else [f"p_{c}" for c in names]
        w.writerow(["case", *(["label"] if labels is not None else []), *probs, "prediction"])
        for i, case in enumerate(cases):
            label = [] if labels is None else [_label_text(labels[i], names, clf)]
            values = [p[i, 1]] if clf.task.binary else list(p[i])
            w.writerow([case, *label, *(f"{v:.6f}" for v in values), _call_text(calls[i], names)])
    return path


def _label_text(label, names: list[str], clf: Classifier) -> str:
    if clf.task.multilabel:
        return ";".join(n for n, v in zip(names, label, strict=True) if v)
    return str(int(label))


def _call_text(call, names: list[str]) -> str:
    if np.ndim(call):
        return ";".join(n for n, v in zip(names, call, strict=True) if v)
    return names[int(call)]
