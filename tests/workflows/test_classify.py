"""Classifier training, threshold choice, evaluation and prediction on real MedMNIST data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.inference.classify import Classifier
from medfoundry.runs.checkpoint import load_checkpoint
from medfoundry.training.config import TrainConfig
from medfoundry.workflows.classify import evaluate_classifier, predict_classifier, train_classifier

pytestmark = pytest.mark.real_data


def _cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(model="tsfm_test", threads=2, **kw)
    cfg.optim.name, cfg.optim.lr = "adamw", 1e-3
    cfg.data.num_workers = 0
    return cfg


def test_pneumonia_learns_and_the_threshold_is_chosen_on_validation(pneumonia_classifier):
    run, result = pneumonia_classifier
    s = json.loads((run / "val" / "summary.json").read_text())
    assert s["n"] == 524 and s["class_counts"] == [135, 389]
    assert s["auc_roc"]["value"] > 0.9  # 40 steps: far above chance
    lo, hi = s["auc_roc"]["ci95"]
    assert lo < s["auc_roc"]["value"] < hi
    for key in (
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "auc_pr",
        "ece",
    ):
        assert s[key]["value"] is not None and len(s[key]["ci95"]) == 2
    model = load_checkpoint(run / "model.safetensors", weights=False).meta
    assert model["kind"] == "model" and model["task"]["thresholds"] == result["thresholds"]
    assert s["thresholds"] == result["thresholds"]
    best = max(
        json.loads(line)["val/mean"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"val"' in line
    )
    assert s["auc_roc"]["value"] == pytest.approx(best, abs=1e-4)  # the best checkpoint's model
    for name in ("roc.png", "pr.png", "reliability.png", "confusion_matrix.png", "metrics.csv"):
        assert (run / "val" / name).is_file()


def test_evaluate_any_split_and_predictions_csv(pneumonia_classifier, medmnist_dir, tmp_path):
    run, _ = pneumonia_classifier
    data = medmnist_dir / "pneumoniamnist.npz"
    s = evaluate_classifier(run, data, "val", tmp_path / "ev")
    rows = list(csv.DictReader((tmp_path / "ev" / "predictions.csv").open()))
    assert list(rows[0]) == ["case", "label", "probability", "prediction"] and len(rows) == 524
    clf = Classifier.load(run)
    p = np.array([float(r["probability"]) for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    calls = np.array([r["prediction"] == "pneumonia" for r in rows])
    assert s["accuracy"]["value"] == pytest.approx((calls == y).mean(), abs=1e-9)
    near = np.abs(p - clf.thresholds()[0]) < 1e-5  # 6 decimals in the file
    assert np.array_equal(calls[~near], (p >= clf.thresholds()[0])[~near])
    with pytest.raises(MedfoundryError, match="no 'test' split"):
        evaluate_classifier(run, data, "test", tmp_path / "t")
    out = predict_classifier(run, data, "val", tmp_path / "p.csv")
    assert len(out.read_text().splitlines()) == 525


def test_a_finished_run_is_not_trained_again(pneumonia_classifier, medmnist_dir):
    run, _ = pneumonia_classifier
    before = (run / "checkpoints" / "final.safetensors").stat().st_mtime_ns
    again = train_classifier(medmnist_dir / "pneumoniamnist.npz", run, progress=False)
    assert again["resumed"] == "finished"
    assert (run / "checkpoints" / "final.safetensors").stat().st_mtime_ns == before


def _small_adrenal(medmnist_dir, path, n_train=48, n_val=24):
    with np.load(medmnist_dir / "adrenalmnist3d.npz") as f:
        np.savez(
            path,
            train_images=f["train_images"][:n_train],
            train_labels=f["train_labels"][:n_train],
            val_images=f["val_images"][:n_val],
            val_labels=f["val_labels"][:n_val],
        )
    return path


def test_3d_linear_probe_from_a_segmentation_checkpoint(pretrained, medmnist_dir, tmp_path):
    data = _small_adrenal(medmnist_dir, tmp_path / "adrenalmnist3d_small.npz")
    run = tmp_path / "probe"
    cfg = _cfg(epochs=1, iters_per_epoch=4, batch_size=4)
    train_classifier(data, run, cfg, source=pretrained, finetune="linear", progress=False)
    init = json.loads((run / "init.json").read_text())
    assert "encoder.0.0.conv1.weight" in init["loaded"]
    assert all(n.startswith("heads.") for n in init["new"])
    src = load_checkpoint(pretrained).weights
    got = load_checkpoint(run / "model.safetensors").weights
    frozen = [k for k in got if k.startswith(("stem.", "encoder.")) and k in src]
    assert len(frozen) > 10
    assert all(torch.equal(got[k], src[k]) for k in frozen)  # a linear probe moves the head only
    assert not torch.equal(got["heads.fc.weight"], torch.zeros_like(got["heads.fc.weight"]))
    assert (run / "val" / "summary.json").is_file()
    clf = Classifier.load(run)
    assert clf.input_shape == [28, 28, 28] and clf.ckpt.meta["model"]["strides"][1] == [2, 2, 2]


def _png_folder(root, labels, shapes, split=True):
    from PIL import Image

    root.mkdir()
    rows = ["case,label,split" if split else "case,label"]
    rng = np.random.default_rng(0)
    for i, lab in enumerate(labels):
        img = rng.integers(0, 40, (24, 24)).astype(np.uint8)
        for cls in lab.split(";"):
            y0, x0 = shapes[cls]
            img[y0 : y0 + 8, x0 : x0 + 8] = 220  # each class a bright square in its own place
        Image.fromarray(img).save(root / f"c{i}.png")
        rows.append(f"c{i},{lab},{'val' if i % 5 == 0 else 'train'}" if split else f"c{i},{lab}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("multilabel", [False, True])
def test_multiclass_and_multilabel_folders(tmp_path, multilabel):
    shapes = {"a": (2, 2), "b": (2, 14), "c": (14, 8)}
    names = ["a;b", "c", "a", "b;c"] if multilabel else ["a", "b", "c"]
    labels = [names[i % len(names)] for i in range(60)]
    data = _png_folder(tmp_path / "data", labels, shapes)
    run = tmp_path / "run"
    result = train_classifier(
        data, run, _cfg(epochs=3, iters_per_epoch=15, batch_size=16), progress=False
    )
    s = result["summary"]
    assert s["kind"] == ("multilabel" if multilabel else "multiclass")
    assert s["auc_roc"]["value"] > 0.8  # the squares are easy
    header = (run / "val" / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header == ["case", "label", "p_a", "p_b", "p_c", "prediction"]
    assert (result["thresholds"] is None) != multilabel
    if multilabel:
        return
    one = predict_classifier(run, data / "c2.png", "test", tmp_path / "one.csv")  # one image file
    row = one.read_text().splitlines()[1].split(",")
    assert row[0] == "c2" and row[-1] == "c"  # its bright square is class c's
    from medfoundry.workflows.explain import explain

    r = explain(run, tmp_path / "ex", "occlusion", image=data / "c2.png", class_name="c")
    heat = r["cases"][0]
    assert heat["class"] == "c" and (tmp_path / "ex" / "c2_occlusion.nii.gz").is_file()


def test_a_folder_without_splits_validates_on_a_seeded_share(tmp_path):
    shapes = {"a": (2, 2), "b": (14, 14)}
    data = _png_folder(tmp_path / "data", ["a", "b"] * 20, shapes, split=False)
    run = tmp_path / "run"
    result = train_classifier(
        data, run, _cfg(epochs=1, iters_per_epoch=10, batch_size=8), progress=False
    )
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["val"]) == 8 and result["summary"]["n"] == 8  # 20% of 40
    assert len(result["thresholds"]) == 1
