"""Prediction on real volumes: input geometry and header kept, ids, classes, mirroring, bad inputs,
the same labels as training validation, and the evaluate command on the results."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from medfoundry.cli.main import main
from medfoundry.evaluation.evaluate import evaluate_folders
from medfoundry.inference.predict_files import group_inputs, predict_paths
from medfoundry.inference.predictor import Predictor
from medfoundry.inference.sliding_window import predict_sliding_window
from medfoundry.io import Volume, read_image
from medfoundry.pool import load_pool
from medfoundry.preprocessing import load_case


@pytest.fixture(scope="module")
def hippo_images(hippo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imgs")
    for f in sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[:3]:
        shutil.copy(f, out / f.name)
    return out


def test_zero_shot_pool_model_writes_global_ids_in_the_input_geometry(
    pretrained,
    hippo_images,
    tmp_path,
):
    pred = Predictor.from_checkpoint(pretrained, "cpu", save_probabilities=True)
    assert pred.class_names[:2] == ["hippocampus_anterior", "hippocampus_posterior"]
    out = predict_paths(pred, hippo_images, tmp_path / "p", progress=False)
    assert len(out["written"]) == 3 and not out["failed"]
    for f in hippo_images.iterdir():
        src, dst = nib.load(f), nib.load(tmp_path / "p" / f.name)
        assert dst.shape == src.shape and np.allclose(dst.affine, src.affine)
        assert dst.header.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(dst.dataobj))) <= set(range(6))
        probs = np.load(tmp_path / "p" / f.name.replace(".nii.gz", ".npz"))
        assert probs["probabilities"].shape == (5, *src.shape[::-1])
    again = predict_paths(pred, hippo_images, tmp_path / "p", progress=False)
    assert again["kept"] and not again["written"]  # a rerun keeps finished cases


def test_dataset_ids_classes_and_validation_agreement(
    pretrained,
    real_small_pool,
):
    """Predicting a pool case through files gives, on the preprocessed grid, the labels validation
    computes with the same decision rule (hippocampus needs no resampling, so the grids coincide
    within the crop)."""
    pool = load_pool(real_small_pool)
    case = next(c for c in pool["cases"] if c["dataset"] == "hippocampus")
    pred = Predictor.from_checkpoint(pretrained, "cpu", dataset="hippocampus", amp=False)
    assert pred.output_ids == [1, 2]  # the dataset's own ids
    image, _, props = load_case(real_small_pool, case["id"])
    logits = predict_sliding_window(
        pred.model, torch.from_numpy(np.array(image)), pred.patch, amp=False
    )
    expected = pred.task.decode_ids(logits, case["valid_labels"])  # what validation calls
    got = pred.predict(read_image(case["images"])).labels.array[0]
    (z0, z1), (y0, y1), (x0, x1) = props["nonzero_bbox"]
    assert np.array_equal(got[z0:z1, y0:y1, x0:x1], expected)
    only = Predictor.from_checkpoint(pretrained, "cpu", dataset="hippocampus", classes=["2"])
    assert only.output_ids == [2] and only.class_names == ["hippocampus_posterior"]


def test_mirroring_skips_the_left_right_axis_for_sided_classes(pretrained):
    pred = Predictor.from_checkpoint(pretrained, "cpu", mirror=True)
    vol = Volume(np.zeros((1, 4, 4, 4), np.float32), [1, 1, 1])  # default LPS: X is left-right
    pred.class_names = ["myocardium", "left_ventricle"]
    assert pred.mirror_axes(vol) == (0, 1)
    pred.class_names = ["myocardium"]
    assert pred.mirror_axes(vol) == (0, 1, 2)


def test_bad_inputs_are_reported_and_skipped(pretrained, hippo_images, tmp_path, capsys):
    imgs = tmp_path / "in"
    shutil.copytree(hippo_images, imgs)
    (imgs / "broken.nii.gz").write_bytes(b"not a nifti")
    code = main(
        ["-q", "predict", "-m", str(pretrained), "-i", str(imgs), "-o", str(tmp_path / "o")]
    )
    assert code == 1
    assert "predicted 3 case(s), kept 0, failed 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o").glob("[!.]*")) == sorted(
        p.name for p in hippo_images.iterdir()
    )  # the records of how they were made live in the hidden .medfoundry folder
    assert set(group_inputs(imgs)) == {"broken", *(p.name[:-7] for p in hippo_images.iterdir())}


def test_evaluate_command_on_real_labels(hippo_dir, tmp_path, capsys):
    refs = tmp_path / "ref"
    refs.mkdir()
    for f in sorted((hippo_dir / "labelsTr").glob("*.nii.gz"))[:3]:
        shutil.copy(f, refs / f.name)
    preds = tmp_path / "pred"
    shutil.copytree(refs, preds)
    first = sorted(preds.iterdir())[0]  # damage one prediction: drop class 2
    img = nib.load(first)
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 2] = 0
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), first)
    assert main(["-q", "evaluate", str(preds), str(refs), "-o", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["num_cases"] == 3 and s["labels"] == [1, 2]
    assert s["mean"]["1"]["dice"] == pytest.approx(1.0)
    assert s["mean"]["2"]["dice"] == pytest.approx(2 / 3)  # 1, 1 and 0
    assert s["undefined"]["2"]["hd95_mm"] == 1 and s["mean"]["2"]["hd95_mm"] == 0.0
    assert (tmp_path / "per_case.csv").read_text().count("\n") == 7
    (preds / sorted(refs.iterdir())[1].name).unlink()
    with pytest.raises(Exception, match="have no prediction"):
        evaluate_folders(preds, refs)
