"""Classification metrics (numpy only): the clinical set, each with a bootstrap 95% interval,
calibration, and the curves behind the ROC and PR plots.

Inputs: ``y`` ``(N,)`` int class indices (binary: 1 = positive) or ``(N, K)`` 0/1 (multi-label);
``p`` ``(N,)`` positive-class probabilities (binary), ``(N, K)`` class probabilities summing to 1
(multi-class) or independent per-label probabilities (multi-label). Conventions, as scikit-learn's:

- AUC-ROC is the Mann-Whitney statistic (ties count one half); AUC-PR is average precision
  (``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds), not the trapezoid;
- a ratio with an empty denominator (no positive case for sensitivity, no positive call for PPV) is
  NaN, and an AUC with one class only is NaN; bootstrap intervals ignore NaN resamples;
- multi-class AUCs are one-vs-rest, macro-averaged; sensitivity, specificity, PPV, NPV and F1 are
  macro averages of the one-vs-rest binary figures; multi-label figures are macro averages over labels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BOOTSTRAP = 1000
ECE_BINS = 10


def auc_roc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve of binary ``y`` against scores ``p`` (NaN with one class)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(p, np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """AUC-PR as average precision (NaN with no positive case)."""
    precision, recall, _ = pr_curve(y, p)
    if np.isnan(recall).all():
        return float("nan")
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``, from (0, 0) at threshold +inf, one point per distinct score."""
    tps, fps, thr = _counts_by_threshold(y, p)
    tpr = tps / max(tps[-1], 1)
    fpr = fps / max(fps[-1], 1)
    return np.r_[0.0, fpr], np.r_[0.0, tpr], np.r_[np.inf, thr]


def pr_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` with recall decreasing, ending at (1, 0) as sklearn's."""
    tps, fps, thr = _counts_by_threshold(y, p)
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / tps[-1] if tps[-1] else np.full_like(tps, np.nan)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (a case is positive when ``p >= t``)."""
    fpr, tpr, thr = roc_curve(y, p)
    best = int(np.argmax(tpr[1:] - fpr[1:])) + 1
    return float(thr[best])


def threshold_for_sensitivity(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity reaches ``target``."""
    _, tpr, thr = roc_curve(y, p)
    return float(thr[int(np.argmax(tpr >= target))])


def binary_point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The clinical metrics of calling ``p >= threshold`` positive, plus both AUCs."""
    y = np.asarray(y).astype(bool)
    call = np.asarray(p) >= threshold
    tp, tn = float((call & y).sum()), float((~call & ~y).sum())
    fp, fn = float((call & ~y).sum()), float((~call & y).sum())
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    ppv = _ratio(tp, tp + fp)
    return {
        "accuracy": _ratio(tp + tn, len(y)),
        "balanced_accuracy": float(np.mean([sens, spec])),
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc_roc": auc_roc(y, p),
        "auc_pr": average_precision(y, p),
    }


def multiclass_point_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy of the arg-max class; one-vs-rest macro figures."""
    y = np.asarray(y)
    call = np.argmax(p, axis=1)
    per_class = [
        binary_point_metrics(y == k, np.where(call == k, 1.0, 0.0), 0.5) for k in range(p.shape[1])
    ]
    out = {
        "accuracy": float((call == y).mean()),
        "balanced_accuracy": float(np.nanmean([m["sensitivity"] for m in per_class])),
    }
    for key in ("sensitivity", "specificity", "ppv", "npv", "f1"):
        out[key] = float(np.nanmean([m[key] for m in per_class]))
    out["auc_roc"] = float(np.nanmean([auc_roc(y == k, p[:, k]) for k in range(p.shape[1])]))
    out["auc_pr"] = float(
        np.nanmean([average_precision(y == k, p[:, k]) for k in range(p.shape[1])])
    )
    return out


def multilabel_point_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: np.ndarray
) -> dict[str, float]:
    """Per-label binary metrics at each label's threshold, macro-averaged."""
    rows = [binary_point_metrics(y[:, k], p[:, k], thresholds[k]) for k in range(p.shape[1])]
    return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}


def confusion_matrix(y: np.ndarray, call: np.ndarray, k: int) -> np.ndarray:
    """``(K, K)`` counts, row = true class, column = predicted class."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(y, np.int64), np.asarray(call, np.int64)), 1)
    return m


def reliability(y_hit: np.ndarray, confidence: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Calibration in ``bins`` equal-width confidence bins: per bin ``count``, mean ``confidence`` and
    ``accuracy`` (fraction of hits), and ``ece`` (count-weighted mean |accuracy - confidence|).
    Binary tasks pass (y, p(positive)); multi-class, (arg max == y, max probability)."""
    confidence = np.asarray(confidence, np.float64)
    hit = np.asarray(y_hit, np.float64)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf = np.bincount(index, confidence, bins) / np.maximum(count, 1)
    acc = np.bincount(index, hit, bins) / np.maximum(count, 1)
    ece = float(np.sum(count * np.abs(acc - conf)) / max(len(hit), 1))
    return {
        "ece": ece,
        "count": count.tolist(),
        "confidence": conf.tolist(),
        "accuracy": acc.tolist(),
    }


def bootstrap_intervals(
    metrics: Callable[[np.ndarray], dict[str, float]],
    n: int,
    resamples: int = BOOTSTRAP,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile 95% intervals: ``metrics(indices)`` on ``resamples`` resamples of ``range(n)``
    with replacement (cases, not voxels or pixels); NaN resamples are left out."""
    rng = np.random.default_rng(seed)
    rows = [metrics(rng.integers(0, n, n)) for _ in range(resamples)]
    out = {}
    for key in rows[0]:
        values = np.array([r[key] for r in rows], np.float64)
        values = values[np.isfinite(values)]
        out[key] = (
            [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
            if len(values)
            else [float("nan"), float("nan")]
        )
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _counts_by_threshold(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives when calling every case with a score >= each distinct
    score, scores decreasing."""
    y = np.asarray(y).astype(np.float64)
    p = np.asarray(p, np.float64)
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(p)), len(p) - 1]  # the last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return tps, fps, p[last]
