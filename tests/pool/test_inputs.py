"""Pool inputs a user gets wrong: names that would leave the pool folder, paths that leave the
dataset root, images without labels, 4D images, unknown modalities."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.cli.main import main
from medfoundry.pool import build_pool, load_pool, load_pool_spec
from medfoundry.pool.build import PoolValidationError
from medfoundry.pool.modality import MODALITY_NAMES, is_known_modality
from tests.conftest import DATA, copy_hippo_cases

BAD_NAMES = ["../../evil", "a/b", "..", ".hidden", "-x", "a b", "a\\b", "/abs"]


@pytest.fixture
def hippo3(tmp_path, hippo_dir):
    return copy_hippo_cases(hippo_dir, tmp_path / "hippo", n=3)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _spec(tmp_path, root, name="hippo", extra="", pool_name="t") -> Path:
    return _write(
        tmp_path / "pool.yaml",
        f"name: {pool_name!r}\ndatasets:\n  - name: {name!r}\n    root: {root}\n"
        f"    modality: MRI\n    label_map: {{1: anterior, 2: posterior}}\n{extra}",
    )


def _folder_extra(case_list: str | None = None) -> str:
    extra = "    images: imagesTr/{case}.nii.gz\n    labels: labelsTr/{case}.nii.gz\n"
    return extra + (f"    case_lists: [{case_list}]\n" if case_list else "")


def _cases(root: Path) -> list[str]:
    return sorted(p.name[: -len(".nii.gz")] for p in (root / "labelsTr").glob("*.nii.gz"))


# A. Names and paths that would leave the pool folder or the dataset root.


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_dataset_name_must_be_a_plain_name(tmp_path, hippo3, bad):
    with pytest.raises(MedfoundryError) as err:
        load_pool_spec(_spec(tmp_path, hippo3, name=bad))
    assert re.search(
        r"pool\.yaml: datasets\[0\]: dataset name .* is not a plain name", str(err.value)
    )
    assert "\n" not in str(err.value)


def test_the_pool_name_is_a_label_any_one_line_text(tmp_path, hippo3):
    """No path is made from it, so "My CT pool" is fine; a date-like dataset name is a plain name."""
    assert load_pool_spec(_spec(tmp_path, hippo3, pool_name="My CT pool/2")).name == "My CT pool/2"
    spec = tmp_path / "dated.yaml"
    spec.write_text(f"name: p\ndatasets:\n  - name: 2024-05-01\n    root: {hippo3}\n")
    assert load_pool_spec(spec).datasets[0].name == "2024-05-01"
    spec.write_text(f'name: "two\\nlines"\ndatasets:\n  - name: h\n    root: {hippo3}\n')
    with pytest.raises(MedfoundryError, match="must be one line"):
        load_pool_spec(spec)


def test_cli_refuses_a_bad_dataset_name_in_one_line_and_writes_nothing(tmp_path, hippo3, capsys):
    spec = _spec(tmp_path, hippo3, name="../../evil")
    assert main(["-q", "pool", "build", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medfoundry: error: ") and "datasets[0]" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layout", ["msd", "folder"])
def test_case_list_entry_must_be_a_plain_name(tmp_path, hippo3, layout):
    cases = _cases(hippo3)
    _write(hippo3 / "train.list", f"{cases[0]}\n../../../../somewhere/x\n")
    extra = _folder_extra("train.list") if layout == "folder" else "    case_lists: [train.list]\n"
    with pytest.raises(MedfoundryError) as err:
        build_pool(_spec(tmp_path, hippo3, extra=extra), tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "dataset 'hippo': case list" in msg and "train.list, line 2" in msg, msg
    assert "'../../../../somewhere/x' is not a plain name" in msg
    assert not (tmp_path / "out").exists() and not (tmp_path / "somewhere").exists()


@pytest.mark.parametrize("layout", ["msd", "folder", "nnunet"])
def test_case_names_from_file_names_must_be_plain(tmp_path, hippo3, synth_dir, layout):
    if layout == "nnunet":
        root = shutil.copytree(synth_dir / "Dataset901_SynthAbdomenCT", tmp_path / "nn")
        first = sorted((root / "labelsTr").iterdir())[0]
        first.rename(first.with_name("-bad.nii.gz"))
        spec = _write(
            tmp_path / "p.yaml", f"name: t\ndatasets:\n  - {{name: hippo, root: {root}}}\n"
        )
        bad = "-bad"
    else:
        root, bad = hippo3, "a..b"
        for sub in ("imagesTr", "labelsTr"):
            shutil.copy(next((root / sub).iterdir()), root / sub / f"{bad}.nii.gz")
        spec = _spec(tmp_path, root, extra=_folder_extra() if layout == "folder" else "")
    with pytest.raises(MedfoundryError) as err:
        build_pool(spec, tmp_path / "out", progress=False)
    msg = str(err.value)
    assert msg.startswith("dataset 'hippo': file ") and f"{bad}.nii.gz" in msg, msg
    assert f"case name '{bad}' is not a plain name" in msg


@pytest.mark.parametrize(
    "extra,what",
    [
        ("    case_lists: [../outside.list]\n", "case list '../outside.list'"),
        ("    case_lists: [/etc/passwd]\n", "case list '/etc/passwd'"),
        (
            "    images: ../imagesTr/{case}.nii.gz\n    labels: labelsTr/{case}.nii.gz\n",
            "pattern '../imagesTr/{case}.nii.gz'",
        ),
        (
            "    images: imagesTr/{case}.nii.gz\n    labels: /tmp/{case}.nii.gz\n",
            "pattern '/tmp/{case}.nii.gz'",
        ),
    ],
)
def test_case_lists_and_patterns_must_stay_inside_the_root(tmp_path, hippo3, extra, what):
    with pytest.raises(MedfoundryError) as err:
        load_pool_spec(_spec(tmp_path, hippo3, extra=extra))
    assert f"datasets[0]: {what} leaves the dataset root" in str(err.value)


def test_pattern_with_other_braces_is_refused(tmp_path, hippo3):
    extra = (
        "    images: 'imagesTr/{case.__class__}{case}.nii.gz'\n    labels: labelsTr/{case}.nii.gz\n"
    )
    with pytest.raises(MedfoundryError, match="no braces but"):
        load_pool_spec(_spec(tmp_path, hippo3, extra=extra))


@pytest.fixture
def built(tmp_path, hippo3):
    build_pool(_spec(tmp_path, hippo3), tmp_path / "out", progress=False)
    return tmp_path / "out" / "pool.json"


@pytest.mark.parametrize(
    "case_id,dataset,reason",
    [
        ("hippo/../../../../somewhere/x", "hippo", "is not '<dataset>/<case>'"),
        ("../x", "..", "is not a plain name"),
        ("hippo/.x", "hippo", "is not a plain name"),
        ("other/hippocampus_001", "hippo", "does not start with its dataset"),
    ],
)
def test_load_pool_rechecks_case_ids_of_an_edited_pool_json(built, case_id, dataset, reason):
    pool = json.loads(built.read_text())
    pool["cases"][1].update(id=case_id, dataset=dataset)
    built.write_text(json.dumps(pool))
    with pytest.raises(MedfoundryError) as err:
        load_pool(built.parent)
    assert "cases[1]" in str(err.value) and reason in str(err.value)


# B. An image without a label is a problem, not a silently dropped case.


def _drop_label(root: Path, index: int = 1) -> Path:
    label = sorted((root / "labelsTr").iterdir())[index]
    label.unlink()
    return root / "imagesTr" / label.name


def test_msd_image_without_label_is_a_problem(tmp_path, hippo3):
    image = _drop_label(hippo3)
    spec = _spec(tmp_path, hippo3)
    with pytest.raises(PoolValidationError) as err:
        build_pool(spec, tmp_path / "out", progress=False)
    (problem,) = err.value.problems
    assert (problem.file, problem.reason) == (str(image), "no label file")
    assert problem.case == f"hippo/{image.name[: -len('.nii.gz')]}"
    assert not (tmp_path / "out").exists()
    build_pool(spec, tmp_path / "out", skip_invalid=True, progress=False)
    pool = load_pool(tmp_path / "out")
    assert len(pool["cases"]) == 2
    assert pool["skipped"] == [
        {"case": problem.case, "file": str(image), "reason": "no label file"}
    ]


def test_nnunet_image_without_label_is_a_problem(tmp_path, synth_dir):
    root = shutil.copytree(synth_dir / "Dataset901_SynthAbdomenCT", tmp_path / "nn")
    label = sorted((root / "labelsTr").iterdir())[0]
    label.unlink()
    case = label.name[: -len(".nii.gz")]
    spec = _write(tmp_path / "p.yaml", f"name: t\ndatasets:\n  - {{name: nn, root: {root}}}\n")
    with pytest.raises(PoolValidationError) as err:
        build_pool(spec, tmp_path / "out", progress=False)
    (problem,) = err.value.problems
    assert problem.case == f"nn/{case}" and problem.reason == "no label file"
    assert problem.file == str(root / "imagesTr" / f"{case}_0000.nii.gz")


def test_case_lists_decide_whether_an_unlabelled_image_is_reported(tmp_path, hippo3):
    image = _drop_label(hippo3)
    cases = _cases(hippo3)
    spec = _spec(tmp_path, hippo3, extra="    case_lists: [a.list]\n")
    _write(hippo3 / "a.list", "\n".join(cases) + "\n")
    build_pool(spec, tmp_path / "out", progress=False)  # not listed: not part of the dataset
    assert len(load_pool(tmp_path / "out")["cases"]) == 2
    _write(hippo3 / "a.list", "\n".join([*cases, image.name[: -len(".nii.gz")]]) + "\n")
    with pytest.raises(PoolValidationError) as err:
        build_pool(spec, tmp_path / "out2", progress=False)
    assert [p.reason for p in err.value.problems] == ["no label file"]


def test_a_folder_without_labelstr_is_image_only_and_a_label_map_for_it_an_error(tmp_path, hippo3):
    """No labelsTr at all: every image is an image-only case (self-supervised training); a
    label_map promising labels it does not have is refused."""
    shutil.rmtree(hippo3 / "labelsTr")
    with pytest.raises(MedfoundryError, match="label_map is given but it has no label files"):
        build_pool(_spec(tmp_path, hippo3), tmp_path / "out", progress=False)


# C. A 4D image among 3D ones: the problem names the file.


def test_a_4d_image_in_a_3d_dataset_names_the_file(tmp_path, hippo_dir):
    root = copy_hippo_cases(hippo_dir, tmp_path / "hippo", n=4)
    image = sorted((root / "imagesTr").iterdir())[2]
    img = nib.load(image)
    arr = np.asanyarray(img.dataobj)
    nib.save(nib.Nifti1Image(np.stack([arr, arr], axis=-1), img.affine), image)
    with pytest.raises(PoolValidationError) as err:
        build_pool(_spec(tmp_path, root), tmp_path / "out", progress=False)
    (problem,) = err.value.problems
    assert problem.file == str(image) and "2 channel(s)" in problem.reason


def test_nan_in_a_second_channel_file_names_that_file(tmp_path, synth_dir):
    root = shutil.copytree(synth_dir / "Dataset901_SynthAbdomenCT", tmp_path / "nn")
    for img in sorted((root / "imagesTr").glob("*_0000.nii.gz")):
        shutil.copy(img, img.with_name(img.name.replace("_0000", "_0001")))
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "CT", "1": "CT"}
    (root / "dataset.json").write_text(json.dumps(meta))
    second = sorted((root / "imagesTr").glob("*_0001.nii.gz"))[1]
    img = nib.load(second)
    arr = np.asanyarray(img.dataobj).astype(np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), second)
    spec = _write(tmp_path / "p.yaml", f"name: t\ndatasets:\n  - {{name: nn, root: {root}}}\n")
    with pytest.raises(PoolValidationError) as err:
        build_pool(spec, tmp_path / "out", progress=False)
    (problem,) = err.value.problems
    assert (problem.file, problem.reason) == (str(second), "1 NaN/Inf voxels")


# D. Modalities: a vocabulary for the pool file, a warning for free dataset.json channel names.


def test_unknown_modality_in_the_pool_file_is_a_one_line_error(tmp_path, hippo3):
    spec = _write(
        tmp_path / "pool.yaml",
        f"name: t\ndatasets:\n  - {{name: hippo, root: {hippo3}, modality: XRAY}}\n",
    )
    with pytest.raises(MedfoundryError) as err:
        load_pool_spec(spec)
    msg = str(err.value)
    assert "datasets[0]: unknown modality 'XRAY'" in msg
    assert "CT" in msg and "FLAIR" in msg and "\n" not in msg


@pytest.mark.parametrize("modality", ["mri", "Ct", "t1CE", "[flair, T1c]", "PET"])
def test_known_modalities_any_case(tmp_path, hippo3, modality):
    spec = _write(
        tmp_path / "pool.yaml",
        f"name: t\ndatasets:\n  - {{name: hippo, root: {hippo3}, modality: {modality}}}\n",
    )
    assert load_pool_spec(spec).datasets[0].modality


def test_unknown_channel_name_of_a_dataset_json_is_a_warning(tmp_path, hippo3, caplog):
    meta = json.loads((hippo3 / "dataset.json").read_text())
    meta["modality"] = {"0": "Dixon"}
    (hippo3 / "dataset.json").write_text(json.dumps(meta))
    spec = _write(tmp_path / "p.yaml", f"name: t\ndatasets:\n  - {{name: hippo, root: {hippo3}}}\n")
    with caplog.at_level(logging.WARNING, logger="medfoundry.pool"):
        build_pool(spec, tmp_path / "out", progress=False)
    assert load_pool(tmp_path / "out")["datasets"]["hippo"]["modality"] == ["Dixon"]
    (record,) = [r for r in caplog.records if "Dixon" in r.getMessage()]
    assert "hippo" in record.getMessage() and "z-score" in record.getMessage()


def test_every_shipped_channel_name_is_known():
    from medfoundry.synth.datasets import SYNTH_DATASETS

    names = [d.modality for d in SYNTH_DATASETS] + ["MRI", "CT"]  # synth MSD-style + presets
    for meta in sorted(DATA.glob("*/dataset.json")):
        data = json.loads(meta.read_text())
        names += list((data.get("channel_names") or data.get("modality") or {}).values())
    unknown = [n for n in names if not is_known_modality(n)]
    assert not unknown, unknown
    assert is_known_modality(" ct ") and not is_known_modality("XRAY") and "CT" in MODALITY_NAMES


def _brats_spec(tmp_path, data_dir, channels: str, root: str = "brats2015_samples") -> Path:
    spec = tmp_path / "brats.yaml"
    spec.write_text(
        f"name: p\ndatasets:\n  - name: brats\n    root: {data_dir / root}\n"
        f"    channels: {channels}\n"
    )
    return spec


def test_channels_pick_channel_files_in_order(tmp_path, data_dir):
    """BraTS (FLAIR + T1c) joins a one-channel pool by its FLAIR channel; the order is kept."""
    from medfoundry.pool.layouts import list_cases

    flair = list_cases(load_pool_spec(_brats_spec(tmp_path, data_dir, "[0]")).datasets[0])
    assert flair.modality == ["FLAIR"] and len(flair.cases) == 6
    assert all(
        len(c.images) == 1 and c.images[0].name.endswith("_0000.nii.gz") for c in flair.cases
    )
    swapped = list_cases(load_pool_spec(_brats_spec(tmp_path, data_dir, "[1, 0]")).datasets[0])
    assert swapped.modality == ["T1c", "FLAIR"]
    assert [p.name[-11:] for p in swapped.cases[0].images] == ["0001.nii.gz", "0000.nii.gz"]
    pool = json.loads(
        build_pool(
            _brats_spec(tmp_path, data_dir, "[0]"), tmp_path / "out", progress=False
        ).read_text()
    )
    assert pool["datasets"]["brats"]["num_channels"] == 1
    assert pool["datasets"]["brats"]["modality"] == ["FLAIR"]


@pytest.mark.parametrize(
    "channels,root,message",
    [
        ("[0, 0]", "brats2015_samples", "distinct channel numbers"),
        ("[-1]", "brats2015_samples", "distinct channel numbers"),
        ("FLAIR", "brats2015_samples", "distinct channel numbers"),
        ("[2]", "brats2015_samples", "channel 2 asked for, case 'brats_2013_pat0001_1' has 2"),
        ("[1]", "msd_task04_hippocampus", "stores its channels in one file"),
    ],
)
def test_bad_channels_are_one_line_errors(tmp_path, data_dir, channels, root, message):
    from medfoundry.pool.layouts import list_cases

    with pytest.raises(MedfoundryError, match=message):
        list_cases(load_pool_spec(_brats_spec(tmp_path, data_dir, channels, root)).datasets[0])
