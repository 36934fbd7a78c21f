"""The command line: help for every command, one-line errors, the main job end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from medfoundry.cli.main import main

COMMANDS = [
    ["synth"],
    ["pool"],
    ["pool", "build"],
    ["pool", "show"],
    ["plan"],
    ["preprocess"],
    ["run"],
    ["models"],
    ["models", "save"],
    ["pretrain"],
    ["finetune"],
    ["predict"],
    ["segment"],
    ["evaluate"],
    ["benchmark", "interactive"],
    ["classify"],
    ["classify", "train"],
    ["classify", "evaluate"],
    ["classify", "predict"],
    ["explain"],
    ["uncertainty"],
    ["benchmark", "uncertainty"],
    ["review"],
    ["review", "queue"],
    ["review", "accept"],
    ["report"],
    ["dicom"],
    ["dicom", "ls"],
    ["deid"],
    ["serve"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*cmd, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: medfoundry " + " ".join(cmd) in out and len(out.splitlines()) > 4


@pytest.mark.parametrize(
    "argv,message",
    [
        (["pool", "build", "missing.yaml", "-o", "x"], "missing.yaml: pool file not found"),
        (["plan", "nowhere"], "pool.json"),
        (["preprocess", "nowhere"], "pool.json"),
        (["synth", "-o", "x", "--cases", "0"], "--cases must be at least 1"),
        (["classify", "train", "--data", "none.npz", "-o", "x"], "none.npz: not a MedMNIST"),
        (["classify", "evaluate", "-m", "nowhere", "--data", "d.npz", "-o", "x"], "nowhere"),
        (["explain", "-m", "nowhere", "-o", "x"], "nowhere"),
        (["review", "queue", "-m", "m", "-i", "missing", "-o", "x"], "missing: not found"),
        (["dicom", "ls", "nowhere"], "nowhere: not a folder"),
        (["deid", "nowhere", "out"], "nowhere: not found"),
        (
            ["review", "accept", "--queue", "x", "--corrected", "c", "--dataset", "d"],
            "x: not a review queue",
        ),
    ],
)
def test_bad_input_is_one_line_error(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfoundry: error:") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_a_system_error_is_one_line_in_the_systems_words(tmp_path, capsys):
    (tmp_path / "afile").write_text("")  # the output's parent is a file: the OS refuses
    assert main(["-q", "synth", "-o", str(tmp_path / "afile" / "out"), "--cases", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfoundry: error: [Errno 20] Not a directory") and "\n" not in err
    assert "internal error" not in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["acdc=1,2", "acdc", "=1,2,2", "acdc=1,a,2"])
def test_plan_target_spacing_must_be_dataset_and_three_numbers(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "nowhere", "--target-spacing", value])
    assert exit_.value.code == 2
    assert f"expected DATASET=Z,Y,X (mm), got '{value}'" in capsys.readouterr().err


def test_validation_report_then_one_line_error(tmp_path, capsys):
    (tmp_path / "d" / "imagesTr").mkdir(parents=True)
    (tmp_path / "d" / "labelsTr").mkdir()
    (tmp_path / "d" / "labelsTr" / "c1.nii.gz").write_bytes(b"junk")
    (tmp_path / "d" / "imagesTr" / "c1.nii.gz").write_bytes(b"junk")
    (tmp_path / "d" / "dataset.json").write_text(
        json.dumps({"modality": {"0": "MRI"}, "labels": {"0": "bg", "1": "a"}})
    )
    (tmp_path / "p.yaml").write_text(
        f"name: t\ndatasets:\n  - {{name: d, root: {tmp_path / 'd'}}}\n"
    )
    assert main(["-q", "pool", "build", str(tmp_path / "p.yaml"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("d/c1: ") and "c1.nii.gz" in err[0]
    assert err[-1].startswith("medfoundry: error: 1 problem(s) in 1 case(s)")
    assert not (tmp_path / "out" / "pool.json").exists()


TINY = [
    "--model",
    "tsfm_test",
    "--pretrain-steps",
    "8",
    "--finetune-epochs",
    "2",
    "--finetune-iters",
    "3",
    "--patch",
    "16",
    "32",
    "32",
]


@pytest.mark.slow
def test_main_job_on_synthetic_data_then_reuses_steps(tmp_path):
    work = tmp_path / "w"
    cmd = [
        sys.executable,
        "-m",
        "medfoundry.cli.main",
        "run",
        "-o",
        str(work),
        "--synth-cases",
        "4",
        "--labelled",
        "2",
    ]
    first = subprocess.run([*cmd, *TINY, "-q"], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    # Pretraining pool: the CT-like dataset; the MR-like one is held out and transferred to.
    assert "pool 'synthetic-abdomen': 4 cases" in first.stdout
    assert "1=liver, 2=spleen, 3=kidney, 4=liver_lesion" in first.stdout
    assert "held out for transfer: synthabdomenmr" in first.stdout
    init = json.loads((work / "finetune" / "init.json").read_text())
    # The fine-tuning recipe: the pretrained stem, encoder and bottleneck; a new decoder and head.
    assert init["head"] == {"kept": [], "new": ["liver", "kidney", "gallbladder"]}
    assert any(k.startswith("encoder.") for k in init["loaded"])
    assert any(k.startswith("decoder.") for k in init["new"])
    summary = json.loads((work / "summary.json").read_text())
    # Two epochs of patch validation; the final weights are scored by evaluate.
    assert [r["epoch"] for r in summary["transfer"]] == [1, 2]
    assert set(summary["evaluation_mean"]) == {"1", "2", "3"}
    # Few labels: both runs train on the same 2 of the 3 training cases.
    split = json.loads((work / "target_split.json").read_text())
    assert len(split["train"]) == 2 and split["available"] == 3 and len(split["val"]) == 1
    for run in ("finetune", "scratch"):
        cfg = yaml.safe_load((work / run / "config.yaml").read_text())
        assert cfg["data"]["train_cases"] == split["train"]
    mean = summary["comparison"][-1]
    assert mean["class"] == "mean" and 0 <= mean["finetune"] <= 1 and 0 <= mean["scratch"] <= 1
    assert summary["fine-tuned mean Dice"] == mean["finetune"]
    assert "pretrained start" in summary["pretrained start vs scratch"]
    chosen = json.loads((work / "postprocessing.json").read_text())["largest_component"]
    assert set(chosen) <= {1, 2, 3}
    html = (work / "report" / "report.html").read_text()
    assert "Few labelled cases: pretrained start vs scratch" in html and "overlay_" in html
    assert (work / "report" / "transfer.png").stat().st_size > 5000
    assert list((work / "report").glob("overlay_*.png"))
    refs = sorted(p.name for p in (work / "references").glob("*.nii.gz"))
    for run in ("finetune", "scratch", "finetune_lcc"):
        assert sorted(p.name for p in (work / "predictions" / run).glob("*.nii.gz")) == refs
    cached = (work / "pool" / "preprocessed").rglob("*")
    done = [
        *[p for p in cached if p.is_file() and p.suffix != ".json"],
        work / "pretrain" / "checkpoints" / "final.safetensors",
        work / "finetune" / "checkpoints" / "final.safetensors",
    ]
    assert len(done) > 2
    mtimes = [p.stat().st_mtime_ns for p in done]
    second = subprocess.run([*cmd, *TINY, "-q"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    # Reused, not redone (file times, not wall times: the step timings include imports).
    assert [p.stat().st_mtime_ns for p in done] == mtimes


@pytest.mark.slow
def test_main_job_on_real_data(data_dir, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "medfoundry.cli.main",
            "-q",
            "run",
            "--data",
            str(data_dir),
            "-o",
            str(tmp_path / "w"),
            *TINY,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    # ACDC, CHAOS (15), BraTS (6) + the small sets (2 spleen CT, 2 spinal cord, 2 brain + 1 breast
    # tumour); hippocampus held out. Spleen in CT and MRI is one class.
    assert "pool 'shared-data-pool': 188 cases" in out.stdout
    assert re.search(r"spleen_ct +2 cases +CT .* labels 1->7\n", out.stdout), out.stdout
    assert re.search(r"chaos +15 cases +MRI .* labels 1->4, 2->5, 3->6, 4->7\n", out.stdout)
    assert "held out for transfer: hippocampus" in out.stdout
    s = json.loads((tmp_path / "w" / "evaluation" / "finetune" / "summary.json").read_text())
    assert s["num_cases"] == 20 and s["labels"] == [1, 2]  # the fixed validation cases (at most 20)
    split = json.loads((tmp_path / "w" / "target_split.json").read_text())
    assert len(split["train"]) == 4 and split["available"] == 160


def test_models_list_and_info(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "tsfm_h" in out and "1657.3M" in out and "none (CNN only)" in out
    assert main(["models", "info", "tsfm_test", "--patch", "32", "64", "64"]) == 0
    out = capsys.readouterr().out
    assert "GFLOP" in out and "estimated training memory" in out and "stages 4" in out


def test_pretrain_flag_errors_are_one_line(tmp_path, capsys):
    assert main(["pretrain", str(tmp_path)]) == 2
    assert "give POOL_DIR and -o RUN_DIR" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(tmp_path / "none")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
