"""One classification evaluation as files: ``summary.json`` (each metric with its bootstrap 95%
interval, the confusion matrix, calibration), ``metrics.csv`` (the same table), and the ROC, PR,
reliability and confusion-matrix plots (PNG). Inputs as :mod:`.classification`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from medfoundry.evaluation import classification as C
from medfoundry.utils.atomic import atomic_path
from medfoundry.utils.jsonfile import write_json


def task_kind(classes: list[str], multilabel: bool) -> str:
    return "multilabel" if multilabel else ("binary" if len(classes) == 2 else "multiclass")


def classification_summary(
    y: np.ndarray,
    p: np.ndarray,
    classes: list[str],
    multilabel: bool = False,
    thresholds: list[float] | None = None,
    resamples: int = C.BOOTSTRAP,
) -> dict:
    """The summary of ``p`` ``(N, K)`` probabilities (binary: column 1 is the positive class) against
    ``y``; ``thresholds``: the decision threshold (binary: one; multi-label: one per label; multi-class
    uses the arg max). Metric keys hold ``{"value", "ci95": [low, high]}``; NaN is written as null."""
    kind = task_kind(classes, multilabel)
    thresholds = thresholds or [0.5] * (1 if kind == "binary" else len(classes))
    metric = _metric_fn(kind, y, p, thresholds)
    point = metric(np.arange(len(y)))
    ci = C.bootstrap_intervals(metric, len(y), resamples)
    out = {"kind": kind, "classes": list(classes), "n": int(len(y))}
    out["thresholds"] = [float(t) for t in thresholds] if kind != "multiclass" else None
    out.update({k: {"value": point[k], "ci95": ci[k]} for k in point})
    out["confusion_matrix"] = _confusion(kind, y, p, thresholds, classes)
    out["calibration"] = _calibration(kind, y, p)
    if kind != "multilabel":
        out["class_counts"] = np.bincount(y, minlength=len(classes)).tolist()
    return _no_nan(out)


def write_classification_report(summary: dict, y: np.ndarray, p: np.ndarray, out_dir: Path) -> None:
    """``summary.json``, ``metrics.csv`` and the plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", summary)
    with atomic_path(out_dir / "metrics.csv") as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "value", "ci95_low", "ci95_high"])
        for key, v in summary.items():
            if isinstance(v, dict) and "ci95" in v:
                w.writerow([key, _fmt(v["value"]), _fmt(v["ci95"][0]), _fmt(v["ci95"][1])])
    _plot_curves(summary, y, p, out_dir)


def _metric_fn(kind: str, y: np.ndarray, p: np.ndarray, thresholds: list[float]):
    if kind == "binary":

        def metric(i):
            m = C.binary_point_metrics(y[i], p[i, 1], thresholds[0])
            return {**m, "ece": C.reliability(y[i], p[i, 1])["ece"]}

    elif kind == "multiclass":

        def metric(i):
            m = C.multiclass_point_metrics(y[i], p[i])
            hit = np.argmax(p[i], 1) == y[i]
            return {**m, "ece": C.reliability(hit, p[i].max(1))["ece"]}

    else:
        t = np.asarray(thresholds)

        def metric(i):
            m = C.multilabel_point_metrics(y[i], p[i], t)
            ece = [C.reliability(y[i, k], p[i, k])["ece"] for k in range(p.shape[1])]
            return {**m, "ece": float(np.mean(ece))}

    return metric


def _confusion(kind, y, p, thresholds, classes) -> dict:
    if kind == "binary":
        m = C.confusion_matrix(y, p[:, 1] >= thresholds[0], 2)
        return {"rows": "true", "columns": "predicted", "labels": classes, "counts": m.tolist()}
    if kind == "multiclass":
        m = C.confusion_matrix(y, np.argmax(p, 1), len(classes))
        return {"rows": "true", "columns": "predicted", "labels": classes, "counts": m.tolist()}
    per = {
        c: C.confusion_matrix(y[:, k], p[:, k] >= thresholds[k], 2).tolist()
        for k, c in enumerate(classes)
    }
    return {
        "rows": "true",
        "columns": "predicted",
        "labels": ["absent", "present"],
        "per_label": per,
    }


def _calibration(kind, y, p) -> dict:
    if kind == "binary":
        return C.reliability(y, p[:, 1])
    if kind == "multiclass":
        return C.reliability(np.argmax(p, 1) == y, p.max(1))
    return C.reliability(y.reshape(-1), p.reshape(-1))


def _plot_curves(summary: dict, y: np.ndarray, p: np.ndarray, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind, classes = summary["kind"], summary["classes"]
    pairs = (
        [(classes[1], y == 1, p[:, 1])]
        if kind == "binary"
        else [
            (c, (y[:, k] if kind == "multilabel" else y == k), p[:, k])
            for k, c in enumerate(classes)
        ]
    )
    for name in ("roc", "pr"):
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for label, yk, pk in pairs:
            if name == "roc":
                fpr, tpr, _ = C.roc_curve(yk, pk)
                ax.plot(fpr, tpr, label=f"{label} (AUC {C.auc_roc(yk, pk):.3f})")
            else:
                prec, rec, _ = C.pr_curve(yk, pk)
                ax.step(
                    rec, prec, where="post", label=f"{label} (AP {C.average_precision(yk, pk):.3f})"
                )
        if name == "roc":
            ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_xlabel("1 - specificity" if name == "roc" else "recall (sensitivity)")
        ax.set_ylabel("sensitivity" if name == "roc" else "precision (PPV)")
        ax.set_title(f"{'ROC' if name == 'roc' else 'Precision-recall'} (n = {summary['n']})")
        ax.legend(fontsize=7, loc="lower right" if name == "roc" else "lower left")
        _save(fig, out_dir / f"{name}.png")
    _plot_reliability(summary["calibration"], summary["n"], out_dir / "reliability.png")
    counts = summary["confusion_matrix"].get("counts")
    if counts is not None:
        _plot_confusion(np.array(counts), classes, out_dir / "confusion_matrix.png")


def _plot_reliability(cal: dict, n: int, path: Path) -> None:
    import matplotlib.pyplot as plt

    bins = len(cal["count"])
    centres = (np.arange(bins) + 0.5) / bins
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    used = np.array(cal["count"]) > 0
    ax.bar(centres[used], np.array(cal["accuracy"])[used], width=1 / bins, edgecolor="k", alpha=0.7)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"Reliability (ECE {cal['ece']:.3f}, n = {n})")
    _save(fig, path)


def _plot_confusion(m: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center", color="k")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.6g}"


def _no_nan(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj
