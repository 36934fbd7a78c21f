"""``medfoundry predict`` hardening: NaN/Inf inputs, what a rerun keeps, the tile step, empty or
image-less input folders, and slow up-sampled cases (a warning and a bar over tiles)."""

from __future__ import annotations

import json
import math
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.cli.main import main
from medfoundry.evaluation.evaluate import evaluate_folders
from medfoundry.inference.predict_files import group_inputs, predict_paths
from medfoundry.inference.prediction_record import record_path
from medfoundry.inference.predictor import PredictOptions, Predictor
from medfoundry.inference.sliding_window import (
    compute_steps,
    count_tiles,
    predict_sliding_window,
)
from medfoundry.io import read_image, read_label
from medfoundry.runs.checkpoint import load_checkpoint, resolve_checkpoint, save_model_file

OPTS = {"amp": False, "mirror": False, "dataset": "hippocampus"}


@pytest.fixture(scope="module")
def two_images(hippo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    for f in sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[:2]:
        shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="module")
def first_run(pretrained, two_images, tmp_path_factory):
    """The two images predicted once (default options of OPTS); later tests copy the folder."""
    out = tmp_path_factory.mktemp("first") / "out"
    done = predict_paths(
        Predictor.from_checkpoint(pretrained, "cpu", **OPTS), two_images, out, False
    )
    assert len(done["written"]) == 2
    return out


def _labels(path):
    return read_label(path).array[0]


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _rerun(pretrained, two_images, out, **options):
    return predict_paths(
        Predictor.from_checkpoint(pretrained, "cpu", **{**OPTS, **options}), two_images, out, False
    )


# 6. NaN / Inf voxels


def test_nan_or_inf_image_is_a_failed_case_with_nothing_written(
    pretrained, two_images, tmp_path, capsys
):
    inp = tmp_path / "in"
    shutil.copytree(two_images, inp)
    src = nib.load(next(iter(sorted(two_images.iterdir()))))
    nan = np.full(src.shape, np.nan, np.float32)
    nib.save(nib.Nifti1Image(nan, src.affine), inp / "all_nan.nii.gz")
    inf = np.asarray(src.dataobj).astype(np.float32)
    inf[3, 4, 5] = np.inf
    nib.save(nib.Nifti1Image(inf, src.affine), inp / "one_inf.nii.gz")
    out = tmp_path / "out"
    pred = Predictor.from_checkpoint(pretrained, "cpu", **OPTS)
    done = predict_paths(pred, inp, out, progress=False)
    assert sorted(done["failed"]) == ["all_nan", "one_inf"] and len(done["written"]) == 2
    assert done["failed"]["all_nan"].startswith(str(inp / "all_nan.nii.gz"))
    assert "contains NaN or infinite values" in done["failed"]["all_nan"]
    assert "(1 of " in done["failed"]["one_inf"] and "\n" not in done["failed"]["one_inf"]
    assert not list(out.glob("all_nan*")) and not list(out.glob("one_inf*"))
    assert not record_path(out, "all_nan").exists()
    with pytest.raises(MedfoundryError, match="contains NaN or infinite values"):
        pred.predict(read_image(inp / "one_inf.nii.gz"))  # library users too
    code = main(["-q", "predict", "-m", str(pretrained), "-i", str(inp), "-o", str(tmp_path / "o")])
    assert code == 1
    assert "predicted 2 case(s), kept 0, failed 2" in capsys.readouterr().out


# 7. what a rerun keeps


def test_same_settings_rerun_keeps_and_does_not_rewrite(
    pretrained, two_images, first_run, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    before = _mtimes(out)
    assert len(list((out / ".medfoundry").glob("*.json"))) == 2
    pred = Predictor.from_checkpoint(pretrained, "cpu", **OPTS)
    monkeypatch.setattr(pred, "predict", lambda *a, **k: pytest.fail("predicted a kept case"))
    done = predict_paths(pred, two_images, out, progress=False)
    assert len(done["kept"]) == 2 and not done["written"] and not done["failed"]
    assert _mtimes(out) == before
    record = json.loads(record_path(out, sorted(done["kept"])[0]).read_text())
    assert (
        record["model_sha256"] == pred.model_sha256 and record["settings"]["step_fraction"] == 0.5
    )
    refs = tmp_path / "refs"  # evaluate pairs the label maps only, not the records
    shutil.copytree(out, refs, ignore=shutil.ignore_patterns(".medfoundry"))
    assert evaluate_folders(out, refs, tmp_path / "s.json")["num_cases"] == 2


def test_empty_truncated_or_unrecorded_outputs_are_predicted_again(
    pretrained, two_images, first_run, tmp_path, caplog
):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    a, b = sorted(out.glob("*.nii.gz"))
    expected = {p.name: _labels(p) for p in (a, b)}
    a.write_bytes(a.read_bytes()[:40])  # truncated
    b.write_bytes(b"")  # 0 bytes
    caplog.set_level("INFO", logger="medfoundry.inference.predict_files")
    done = _rerun(pretrained, two_images, out)
    assert len(done["written"]) == 2 and not done["kept"]
    assert "predicting again" in caplog.text and "not the file recorded" in caplog.text
    for p in (a, b):
        assert np.array_equal(_labels(p), expected[p.name])  # replaced, reads back
    record_path(out, a.name[: -len(".nii.gz")]).unlink()  # an output nobody vouches for
    done = _rerun(pretrained, two_images, out)
    assert done["written"] == [a.name[: -len(".nii.gz")]] and len(done["kept"]) == 1


def test_other_classes_step_or_model_predict_again(pretrained, two_images, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    done = _rerun(pretrained, two_images, out, classes=["hippocampus_posterior"])
    assert len(done["written"]) == 2
    for p in out.glob("*.nii.gz"):
        assert set(np.unique(_labels(p))) <= {0, 2}  # only the asked class
    assert len(_rerun(pretrained, two_images, out, classes=["2"])["kept"]) == 2  # same classes
    assert len(_rerun(pretrained, two_images, out, step_fraction=1.0)["written"]) == 2
    model = save_model_file(
        pretrained, tmp_path / "m.safetensors"
    )  # the same weights, another file
    done = predict_paths(Predictor.from_checkpoint(model, "cpu", **OPTS), two_images, out, False)
    assert len(done["written"]) == 2


def test_probabilities_are_part_of_the_check(pretrained, two_images, first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    assert len(_rerun(pretrained, two_images, out, save_probabilities=True)["written"]) == 2
    npz = sorted(out.glob("*.npz"))
    assert len(npz) == 2
    assert len(_rerun(pretrained, two_images, out, save_probabilities=True)["kept"]) == 2
    npz[0].write_bytes(npz[0].read_bytes()[:100])
    done = _rerun(pretrained, two_images, out, save_probabilities=True)
    assert done["written"] == [npz[0].stem] and len(done["kept"]) == 1
    assert np.load(npz[0])["probabilities"].dtype == np.float16
    npz[1].unlink()
    assert _rerun(pretrained, two_images, out, save_probabilities=True)["written"] == [npz[1].stem]


def test_a_case_redone_leaves_nothing_of_the_old_outputs(
    pretrained, two_images, first_run, tmp_path
):
    """A case that is predicted again loses its old files first: if the new prediction fails, no
    file of another model or setting remains; probabilities no longer asked for are removed."""
    out = tmp_path / "out"
    shutil.copytree(first_run, out)
    assert len(_rerun(pretrained, two_images, out, save_probabilities=True)["written"]) == 2
    assert len(_rerun(pretrained, two_images, out)["written"]) == 2  # without probabilities
    assert not list(out.glob("*.npz"))
    inp = tmp_path / "in"
    shutil.copytree(two_images, inp)
    victim = sorted(inp.iterdir())[0]
    img = nib.load(victim)
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[0, 0, 0] = np.nan  # the input changed, and can no longer be predicted
    victim.chmod(0o644)
    nib.save(nib.Nifti1Image(data, img.affine), victim)
    done = _rerun(pretrained, inp, out, step_fraction=1.0)
    case = victim.name[: -len(".nii.gz")]
    assert list(done["failed"]) == [case]
    assert not (out / victim.name).exists() and not (out / ".medfoundry" / f"{case}.json").exists()


# 11. the tile step


@pytest.mark.parametrize("step", ["0", "-0.5", "5", "nan"])
def test_step_outside_0_1_is_a_one_line_error_before_any_folder(
    pretrained, two_images, tmp_path, capsys, step
):
    out = tmp_path / "out"
    argv = ["-q", "predict", "-m", str(pretrained), "-i", str(two_images), "-o", str(out)]
    assert main([*argv, "--step", step]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medfoundry: error: --step")
    assert not out.exists()


def test_step_is_checked_for_library_users_too(pretrained):
    with pytest.raises(MedfoundryError, match="--step"):
        PredictOptions(step_fraction=0)
    options = PredictOptions(step_fraction=1.0)
    options.step_fraction = 1.5
    with pytest.raises(MedfoundryError, match="--step"):
        Predictor(load_checkpoint(resolve_checkpoint(pretrained)), "cpu", options)
    with pytest.raises(ValueError, match="step_fraction"):
        compute_steps([40, 40, 40], [16, 16, 16], 0.0)
    assert compute_steps([40, 40, 40], [16, 16, 16], 1.0)[0] == [0, 12, 24]


# 14. empty or image-less input folders, and failing before predicting anything


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_folder_without_images_is_a_one_line_error_and_no_output(
    pretrained, tmp_path, capfd, content
):
    inp = tmp_path / "in"
    inp.mkdir()
    if content:
        (inp / content).write_text("not an image")
    out = tmp_path / "out"
    assert main(["-q", "predict", "-m", str(pretrained), "-i", str(inp), "-o", str(out)]) == 2
    err = capfd.readouterr().err.strip().splitlines()  # capfd: ITK writes to the C stderr
    assert err == [
        f"medfoundry: error: {inp}: no images (.nii.gz, .nii, .nrrd, .mha, .mhd or DICOM files) found"
    ]
    assert not out.exists()


def test_dicom_files_still_make_a_series_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert group_inputs(tmp_path / "s") == {"s": ([tmp_path / "s"], ".nii.gz")}


def test_no_output_folder_when_the_model_or_input_is_bad(pretrained, two_images, tmp_path, capsys):
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"not a model")
    out = tmp_path / "out"
    for model, inp in [(bad_model, two_images), (pretrained, tmp_path / "missing")]:
        assert main(["-q", "predict", "-m", str(model), "-i", str(inp), "-o", str(out)]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        assert not out.exists()


# 16. up-sampled cases: a warning, and a bar over tiles


def test_large_upsampling_warns_with_factor_voxels_and_tiles(pretrained, hippo_dir, caplog, capsys):
    pred = Predictor.from_checkpoint(pretrained, "cpu", step_fraction=1.0, **OPTS)
    image = read_image(sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0])
    coarse = np.array(pred.dataset_plan["target_spacing_mm"], float) * 2  # 8x the voxels
    small = image.with_array(image.array[:, 10:26, 15:35, 10:26] + 1)  # no zero voxel to crop
    small.spacing_mm = coarse
    caplog.set_level("WARNING", logger="medfoundry.inference.predictor")
    labels = pred.predict(small, progress=True, name="thick").labels
    assert labels.shape_zyx == (16, 20, 16)
    msg = next(r.getMessage() for r in caplog.records if "up-sampled" in r.getMessage())
    assert msg.startswith("thick: up-sampled 8.0x")  # 16x20x16 voxels (all nonzero) -> 32x40x32
    assert "5,120 -> 40,960 voxels" in msg
    expected_tiles = math.prod(
        math.ceil((s - p) / p) + 1 for s, p in zip((32, 40, 32), pred.patch, strict=True)
    )
    assert f"{expected_tiles:,} tiles" in msg
    assert "tiles" in capsys.readouterr().err  # the bar inside the case
    caplog.clear()
    pred.predict(image, progress=False)  # the planned spacing: no warning, no bar
    assert not any("up-sampled" in r.getMessage() for r in caplog.records)
    assert "tiles" not in capsys.readouterr().err


def test_count_tiles_matches_the_tiles_the_sliding_window_runs():
    calls = []

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):  # (B, C, Z, Y, X) -> (B, 2, Z, Y, X)
            calls.append(x.shape[0])
            return torch.cat([x, -x], dim=1)

    for shape, step in [((20, 37, 33), 0.5), ((8, 50, 40), 1.0), ((16, 16, 16), 0.25)]:
        calls.clear()
        predict_sliding_window(Counter(), torch.rand(1, *shape), [16, 16, 16], step, 3)
        assert sum(calls) == count_tiles(shape, [16, 16, 16], step)
