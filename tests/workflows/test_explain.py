"""``medfoundry explain`` on a real classifier and a real segmentation model."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.workflows.explain import explain

pytestmark = pytest.mark.real_data


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "ig"])
def test_classifier_maps_and_sanity(pneumonia_classifier, medmnist_dir, tmp_path, method):
    run, _ = pneumonia_classifier
    out = tmp_path / method
    r = explain(run, out, method, data=medmnist_dir / "pneumoniamnist.npz", cases=[0], sanity=True)
    row = r["cases"][0]
    assert row["class"] in ("normal", "pneumonia") and 0.5 <= row["probability"] <= 1.0
    heat = nib.load(out / f"val_00000_{method}.nii.gz").get_fdata()
    assert heat.shape[:2] == (28, 28) and np.abs(heat).max() > 0
    assert (out / f"val_00000_{method}.png").stat().st_size > 0
    assert -1 <= row["randomized_rank_similarity"] < 0.9  # a map that depends on the weights
    assert json.loads((out / "explain.json").read_text())["method"] == method


def test_segmentation_class_map_has_the_input_geometry(pretrained, hippo_dir, tmp_path):
    path = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    r = explain(pretrained, tmp_path, "gradcam", image=path, class_name="hippocampus anterior")
    assert r["cases"][0]["class"] == "hippocampus_anterior"
    assert isinstance(r["cases"][0]["mean_logit"], float)  # strict JSON: no NaN probability
    json.loads((tmp_path / "explain.json").read_text(), parse_constant=lambda c: 1 / 0)
    name = path.name.split(".")[0]
    heat, ref = nib.load(tmp_path / f"{name}_gradcam.nii.gz"), nib.load(path)
    assert heat.shape == ref.shape
    np.testing.assert_allclose(heat.affine, ref.affine, atol=1e-4)
    with pytest.raises(MedfoundryError, match="one --class"):
        explain(pretrained, tmp_path, "gradcam", image=path)
