"""Pool build on real data: label space, probabilities, layouts, and every kind of bad input."""

from __future__ import annotations

import json
import math
import re
import shutil

import nibabel as nib
import numpy as np
import pytest

from medfoundry.pool import build_pool, load_pool
from medfoundry.pool.build import PoolValidationError
from tests.conftest import copy_hippo_cases

REAL_POOL = """
name: mri-pool
datasets:
  - name: hippocampus
    root: {hippo}
    modality: MRI
    label_map: {{1: hippocampus_anterior, 2: hippocampus_posterior}}
  - name: acdc
    root: {acdc}
    images: images/{{case}}.nii.gz
    labels: labels/{{case}}.nii.gz
    case_lists: [train.list, val.list]
    modality: MRI
    label_map: {{1: right_ventricle, 2: myocardium, 3: left_ventricle}}
"""


@pytest.fixture(scope="module")
def real_pool(tmp_path_factory, hippo_dir, acdc_dir):
    tmp = tmp_path_factory.mktemp("realpool")
    spec = tmp / "pool.yaml"
    spec.write_text(REAL_POOL.format(hippo=hippo_dir, acdc=acdc_dir))
    build_pool(spec, tmp / "pool", jobs=2, progress=False)
    return load_pool(tmp / "pool")


def test_real_pool_label_space_and_datasets(real_pool):
    assert real_pool["labels"] == {
        "background": 0,
        "hippocampus_anterior": 1,
        "hippocampus_posterior": 2,
        "right_ventricle": 3,
        "myocardium": 4,
        "left_ventricle": 5,
    }
    hip, acdc = real_pool["datasets"]["hippocampus"], real_pool["datasets"]["acdc"]
    assert (hip["num_cases"], acdc["num_cases"]) == (200, 160)
    assert hip["layout"] == "msd" and acdc["layout"] == "folder"
    assert acdc["local_to_global"] == {"1": 3, "2": 4, "3": 5}
    assert hip["modality"] == ["MRI"]


def test_real_pool_sampling_probabilities_follow_inverse_sqrt(real_pool):
    cases = real_pool["cases"]
    by_ds = {c["dataset"]: c["sampling_probability"] for c in cases}
    z = 200 / math.sqrt(200) + 160 / math.sqrt(160)
    assert math.isclose(by_ds["hippocampus"], (1 / math.sqrt(200)) / z, rel_tol=1e-9)
    assert math.isclose(by_ds["acdc"], (1 / math.sqrt(160)) / z, rel_tol=1e-9)
    assert math.isclose(sum(c["sampling_probability"] for c in cases), 1.0, abs_tol=1e-9)


def test_real_pool_case_records(real_pool):
    first = next(
        c for c in real_pool["cases"] if c["id"] == "acdc/patient099_frame01"
    )  # first of train.list
    assert first["valid_labels"] == [3, 4, 5]
    assert first["images"] == [first["images"][0]] and first["images"][0].endswith(
        "images/patient099_frame01.nii.gz"
    )
    assert first["shape"] == list(nib.load(first["label"]).shape[::-1])
    assert first["spacing"] == [1.0, 1.0, 1.0]
    assert [c["id"] for c in real_pool["cases"] if c["dataset"] == "acdc"][:2] == [
        "acdc/patient099_frame01",
        "acdc/patient099_frame02",
    ]


@pytest.fixture
def hippo_copy(tmp_path, hippo_dir):
    return copy_hippo_cases(hippo_dir, tmp_path / "hippo", n=6)


def _spec(tmp_path, root, extra=""):
    path = tmp_path / "pool.yaml"
    path.write_text(
        f"name: t\ndatasets:\n  - name: hippo\n    root: {root}\n    modality: MRI\n"
        f"    label_map: {{1: anterior, 2: posterior}}\n{extra}"
    )
    return path


def _damage(root, how):
    labels = sorted((root / "labelsTr").iterdir())  # stable: labels are never deleted here
    images = [root / "imagesTr" / p.name for p in labels]
    if how == "missing image":
        images[0].unlink()
        return images[0].name, "file not found"
    if how == "shape mismatch":
        lab = nib.load(labels[1])
        arr = np.asanyarray(lab.dataobj)[:-2]
        nib.save(nib.Nifti1Image(arr, lab.affine, lab.header), labels[1])
        return labels[1].name, "label shape"
    if how == "geometry mismatch":
        lab = nib.load(labels[2])
        aff = lab.affine.copy()
        aff[0, 3] += 5.0
        nib.save(nib.Nifti1Image(np.asanyarray(lab.dataobj), aff, lab.header), labels[2])
        return labels[2].name, "origin_mm"
    if how == "unknown label":
        lab = nib.load(labels[3])
        arr = np.asanyarray(lab.dataobj).copy()
        arr[0, 0, 0] = 7
        nib.save(nib.Nifti1Image(arr, lab.affine, lab.header), labels[3])
        return labels[3].name, r"label values \[7\]"
    if how == "nan":
        img = nib.load(images[4])
        arr = np.asanyarray(img.dataobj).astype(np.float32)
        arr[1, 2, 3] = np.nan
        nib.save(nib.Nifti1Image(arr, img.affine), images[4])
        return images[4].name, "NaN/Inf"
    if how == "unreadable":
        data = images[5].read_bytes()
        images[5].write_bytes(data[: len(data) // 3])
        return images[5].name, "truncated|corrupt"
    raise AssertionError(how)


DAMAGES = [
    "missing image",
    "shape mismatch",
    "geometry mismatch",
    "unknown label",
    "nan",
    "unreadable",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_each_bad_input_fails_without_writing_pool_json(tmp_path, hippo_copy, how):
    fname, reason = _damage(hippo_copy, how)
    with pytest.raises(PoolValidationError) as err:
        build_pool(_spec(tmp_path, hippo_copy), tmp_path / "out", progress=False)
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert fname in problem.file
    assert problem.case.startswith("hippo/hippocampus_")
    assert re.search(reason, problem.reason), problem.reason
    assert not (tmp_path / "out" / "pool.json").exists()


def test_all_problems_in_one_report(tmp_path, hippo_copy):
    for how in DAMAGES:
        _damage(hippo_copy, how)
    with pytest.raises(PoolValidationError) as err:
        build_pool(_spec(tmp_path, hippo_copy), tmp_path / "out", jobs=2, progress=False)
    assert len({p.case for p in err.value.problems}) == 6
    assert len(err.value.report().splitlines()) == len(err.value.problems)
    assert not (tmp_path / "out" / "pool.json").exists()
    with pytest.raises(Exception, match="no valid cases"):  # all six dropped: nothing left
        build_pool(_spec(tmp_path, hippo_copy), tmp_path / "out", skip_invalid=True, progress=False)


def test_skip_invalid_records_why(tmp_path, hippo_dir):
    root = copy_hippo_cases(hippo_dir, tmp_path / "hippo", n=4)
    image = sorted((root / "imagesTr").iterdir())[0]
    img = nib.load(image)
    arr = np.asanyarray(img.dataobj).astype(np.float32)
    arr[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(arr, img.affine), image)
    build_pool(_spec(tmp_path, root), tmp_path / "out", skip_invalid=True, progress=False)
    pool = load_pool(tmp_path / "out")
    assert len(pool["cases"]) == 3 and pool["datasets"]["hippo"]["num_cases"] == 3
    skipped = pool["skipped"]
    assert (
        len(skipped) == 1 and "NaN/Inf" in skipped[0]["reason"] and image.name in skipped[0]["file"]
    )
    assert math.isclose(sum(c["sampling_probability"] for c in pool["cases"]), 1.0)


def test_nnunet_layout_multichannel_and_default_label_names(tmp_path, synth_dir):
    """An nnU-Net dataset with two channel files per case, labels named by its dataset.json."""
    src = synth_dir / "Dataset901_SynthAbdomenCT"
    dst = tmp_path / "Dataset950_Two"
    shutil.copytree(src, dst)
    for img in sorted((dst / "imagesTr").glob("*_0000.nii.gz")):
        shutil.copy(img, img.with_name(img.name.replace("_0000", "_0001")))
    meta = json.loads((dst / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT"}
    (dst / "dataset.json").write_text(json.dumps(meta))
    spec = tmp_path / "p.yaml"
    spec.write_text(f"name: t\ndatasets:\n  - {{name: two, root: {dst}}}\n")
    build_pool(spec, tmp_path / "out", progress=False)
    pool = load_pool(tmp_path / "out")
    assert pool["datasets"]["two"]["layout"] == "nnunet"
    assert pool["datasets"]["two"]["modality"] == ["CT", "CT"]
    assert all(
        len(c["images"]) == 2 and c["images"][1].endswith("_0001.nii.gz") for c in pool["cases"]
    )
    assert pool["labels"] == {
        "background": 0,
        "liver": 1,
        "spleen": 2,
        "kidney": 3,
        "liver_lesion": 4,
    }
