"""Classification metrics against scikit-learn on the same inputs, with ties and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medfoundry.evaluation import classification as C
from medfoundry.evaluation.classification_report import (
    classification_summary,
    write_classification_report,
)


def _binary(seed: int, n: int = 200, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.25, n), 0, 1)
    if ties:
        p = np.round(p, 1)  # many equal scores across both classes
    return y, p


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_match_sklearn(seed, ties):
    y, p = _binary(seed, ties=ties)
    t = 0.5
    m = C.binary_point_metrics(y, p, t)
    call = (p >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, call).ravel()
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m["auc_pr"] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, call))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, call))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, call))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, call))
    assert m["npv"] == pytest.approx(tn / (tn + fn))
    assert m["f1"] == pytest.approx(skm.f1_score(y, call))


def test_curves_match_sklearn():
    y, p = _binary(3, ties=True)
    fpr, tpr, thr = C.roc_curve(y, p)
    sfpr, stpr, sthr = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)
    np.testing.assert_allclose(thr[1:], sthr[1:])
    prec, rec, pthr = C.pr_curve(y, p)
    sprec, srec, spthr = skm.precision_recall_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(prec, sprec)
    np.testing.assert_allclose(rec, srec)
    np.testing.assert_allclose(pthr, spthr)


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = C.multiclass_point_metrics(y, p)
    call = p.argmax(1)
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, call))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, call))
    assert m["f1"] == pytest.approx(skm.f1_score(y, call, average="macro"))
    assert m["ppv"] == pytest.approx(skm.precision_score(y, call, average="macro"))
    np.testing.assert_array_equal(C.confusion_matrix(y, call, 3), skm.confusion_matrix(y, call))


def test_multilabel_macro_auc_matches_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, (150, 4))
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, (150, 4)), 0, 1)
    m = C.multilabel_point_metrics(y, p, np.full(4, 0.5))
    assert m["auc_roc"] == pytest.approx(skm.roc_auc_score(y, p, average="macro"), abs=1e-12)
    assert m["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5, average="macro"))


def test_edge_cases_are_nan_not_errors():
    y = np.zeros(10, int)
    p = np.linspace(0, 1, 10)
    m = C.binary_point_metrics(y, p, 0.5)
    assert np.isnan(m["auc_roc"]) and np.isnan(m["sensitivity"]) and np.isnan(m["auc_pr"])
    assert m["specificity"] == pytest.approx(0.5)
    assert np.isnan(C.binary_point_metrics(np.ones(4, int), np.zeros(4), 0.5)["ppv"])  # no call


def test_thresholds():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.5, 0.6, 0.4, 0.7, 0.9])
    # t = 0.4: sens 1, spec 1/3 (J = 1/3); t = 0.7: sens 2/3, spec 1 (J = 2/3)
    assert C.youden_threshold(y, p) == pytest.approx(0.7)
    assert C.threshold_for_sensitivity(y, p, 1.0) == pytest.approx(0.4)
    assert C.threshold_for_sensitivity(y, p, 0.6) == pytest.approx(0.7)


def test_expected_calibration_error_by_hand():
    # bin [0.2, 0.3): 2 cases, confidence 0.25, 1 hit -> |0.5 - 0.25|; bin [0.9, 1]: 2 cases, 0.95, 2 hits
    r = C.reliability(np.array([1, 0, 1, 1]), np.array([0.2, 0.3 - 1e-9, 0.9, 1.0]))
    assert r["ece"] == pytest.approx((2 * 0.25 + 2 * 0.05) / 4)
    assert r["count"][2] == 2 and r["count"][9] == 2


def test_bootstrap_interval_brackets_the_value_and_shrinks_with_n(tmp_path):
    y, p = _binary(6, n=100)
    small = classification_summary(y, np.stack([1 - p, p], 1), ["no", "yes"], resamples=300)
    y2, p2 = _binary(6, n=1600)
    big = classification_summary(y2, np.stack([1 - p2, p2], 1), ["no", "yes"], resamples=300)
    for s in (small, big):
        lo, hi = s["auc_roc"]["ci95"]
        assert lo <= s["auc_roc"]["value"] <= hi
    width = [s["auc_roc"]["ci95"][1] - s["auc_roc"]["ci95"][0] for s in (small, big)]
    assert width[1] < width[0] / 2.5  # ~1/sqrt(n): 4x fewer cases, ~2x narrower
    again = classification_summary(y, np.stack([1 - p, p], 1), ["no", "yes"], resamples=300)
    assert again["auc_roc"]["ci95"] == small["auc_roc"]["ci95"]  # seeded
    write_classification_report(small, y, np.stack([1 - p, p], 1), tmp_path)
    for name in ("summary.json", "metrics.csv", "roc.png", "pr.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert small["confusion_matrix"]["counts"] == skm.confusion_matrix(y, p >= 0.5).tolist()
