"""Bad input never hangs, never exits 0 with garbage, and fails in one line before any folder is made.

Each test reproduces one probe of the hardening issue on real hippocampus cases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from medfoundry.cli.main import main
from tests.conftest import FAST_FIT, copy_hippo_cases

TINY = ["--model", "tsfm_test", *(x for kv in FAST_FIT for x in ("--set", kv))]
CLI = [sys.executable, "-m", "medfoundry.cli.main"]


def run_cli(args: list, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """The CLI in a child process with a time limit: a hang fails the test instead of stalling it."""
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw
    )


def one_line_error(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("medfoundry: error:"), text
    assert "Traceback" not in text
    return lines[0]


def make_pool(hippo_dir: Path, tmp: Path, preprocess: bool = True) -> Path:
    """4 real hippocampus cases copied to ``tmp``, built, planned (tsfm_test, 16x32x32), and
    preprocessed."""
    copy_hippo_cases(hippo_dir, tmp / "hippo", n=4)
    (tmp / "pool.yaml").write_text(
        "name: p\ndatasets:\n  - name: hippocampus\n    root: hippo\n    modality: MRI\n"
    )
    assert main(["-q", "pool", "build", str(tmp / "pool.yaml"), "-o", str(tmp / "pool")]) == 0
    plan = ["-q", "plan", str(tmp / "pool"), "--model", "tsfm_test", "--patch", "16", "32", "32"]
    assert main([*plan, "--batch-size", "2"]) == 0
    if preprocess:
        assert main(["-q", "preprocess", str(tmp / "pool"), "-j", "1"]) == 0
    return tmp / "pool"


@pytest.fixture(scope="module")
def small_pool(hippo_dir, tmp_path_factory) -> Path:
    return make_pool(hippo_dir, tmp_path_factory.mktemp("hard"))


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_evaluate_with_two_workers_names_a_damaged_prediction(damage, hippo_dir, tmp_path):
    """Was: a hang (the worker's error could not be rebuilt in the parent)."""
    refs = sorted((hippo_dir / "labelsTr").glob("*.nii.gz"))[:4]
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for f in refs:
        shutil.copy(f, tmp_path / "ref" / f.name)
        shutil.copy(f, tmp_path / "pred" / f.name)
    bad = tmp_path / "pred" / refs[2].name
    bad.write_bytes(b"" if damage == "empty" else bad.read_bytes()[: bad.stat().st_size // 2])
    r = run_cli(["-q", "evaluate", tmp_path / "pred", tmp_path / "ref", "-o", tmp_path / "s.json"])
    assert r.returncode == 2
    assert str(bad) in one_line_error(r.stderr)
    assert not (tmp_path / "s.json").exists()


def test_preprocess_with_two_workers_names_a_source_damaged_after_pool_build(hippo_dir, tmp_path):
    """Was: the same hang as evaluate's."""
    pool = make_pool(hippo_dir, tmp_path, preprocess=False)
    damaged = Path(json.loads((pool / "pool.json").read_text())["cases"][1]["images"][0])
    damaged.chmod(0o644)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    r = run_cli(["-q", "preprocess", pool, "-j", "2"])
    assert r.returncode == 2
    assert str(damaged) in one_line_error(r.stderr)


def _processes(pattern: str) -> str:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.strip()


def test_sigterm_stops_preprocess_quietly_and_a_rerun_finishes(hippo_dir, tmp_path):
    """Was: about 60 lines of worker BrokenPipeError tracebacks."""
    pool = make_pool(hippo_dir, tmp_path, preprocess=False)
    env = {**os.environ, "MEDFOUNDRY_SLOW_TEST_DELAY": "3"}
    proc = subprocess.Popen(
        [*CLI, "-q", "preprocess", str(pool), "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not list((pool / "preprocessed").glob("*/*.image.npy")):  # workers are busy
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert err.strip() == "medfoundry: stopped (SIGTERM)", err
    gone_by = time.monotonic() + 15  # workers exit on their own signal; a busy machine is slow
    while (left := _processes(f"preprocess {pool}")) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert left == ""
    r = run_cli(["-q", "preprocess", pool, "-j", "2"])
    assert r.returncode == 0 and (pool / "preprocessed" / "manifest.json").is_file()


@pytest.mark.parametrize(
    "flags,key",
    [
        (["--lr", "-1"], "optim.lr"),
        (["--set", "optim.lr=-0.01"], "optim.lr"),
        (["--set", "optim.lr=nan"], "optim.lr"),
        (["--set", "optim.lr=inf"], "optim.lr"),
        (["--epochs", "0"], "epochs"),
        (["--iters-per-epoch", "-1"], "iters_per_epoch"),
        (["--batch-size", "0"], "batch_size"),
        (["--set", "data.fg_fraction=1.5"], "data.fg_fraction"),
        (["--set", "data.augment.scale_range=[1.4, 0.7]"], "data.augment.scale_range"),
    ],
)
def test_a_bad_training_value_is_one_line_naming_the_key_before_any_folder(
    flags, key, tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(["pretrain", str(tmp_path / "nopool"), "-o", str(run), *flags]) == 2
    assert f"config key '{key}'" in one_line_error(capsys.readouterr().err)
    assert not run.exists()
    ft = ["finetune", "--from", str(tmp_path / "x"), "--data", str(tmp_path), "-o", str(run)]
    assert main([*ft, *flags]) == 2  # checked before the source model or the data are read
    assert f"config key '{key}'" in one_line_error(capsys.readouterr().err)
    assert not run.exists()


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    small_pool, tmp_path, capsys
):
    """Was: exit 0 with every parameter of best and final non-finite (lr=nan). A learning rate far
    too large makes the loss NaN within a few steps, whatever the CPU."""
    run = tmp_path / "run"
    args = ["-q", "pretrain", str(small_pool), "-o", str(run), *TINY, "--set", "amp=false"]
    args += ["--set", "epochs=4", "--set", "ckpt_every_steps=1", "--set", "optim.grad_clip=0"]
    assert main([*args, "--lr", "1000"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "training stopped" in err and ("nan" in err or "inf" in err or "NaN" in err)
    assert not (run / "checkpoints" / "final.safetensors").exists()
    for path in (run / "checkpoints").glob("*.safetensors"):
        weights = load_file(path)
        assert all(bool(v.isfinite().all()) for v in weights.values() if v.is_floating_point())
    if not list((run / "checkpoints").glob("*.safetensors")):  # stopped before any checkpoint:
        assert main([*args, "--lr", "0.01"]) == 0  # the same folder may start again
        assert (run / "checkpoints" / "final.safetensors").is_file()


def test_a_run_stopped_before_its_first_checkpoint_can_start_again(small_pool, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["-q", "pretrain", str(small_pool), "-o", str(run), *TINY, "--set", "amp=false"]
    assert main([*args, "--lr", "1e6", "--set", "optim.grad_clip=0"]) == 2
    assert "no checkpoint was written" in capsys.readouterr().err
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()
    assert main(args) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == [1, 2, 3]  # nothing of the failed attempt is left in the log


def test_run_with_a_missing_data_folder_makes_no_work_folder(tmp_path, capsys):
    out = tmp_path / "work"
    assert main(["run", "--data", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "data folder not found" in one_line_error(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["evaluate", "p", "r", "--tolerance-mm", "nan"], "--tolerance-mm"),
        (["evaluate", "p", "r", "-j", "0"], "-j/--jobs"),
        (["preprocess", "pool", "-j", "-2"], "-j/--jobs"),
        (["plan", "pool", "--batch-size", "0"], "--batch-size"),
        (["plan", "pool", "--memory-gb", "inf"], "--memory-gb"),
        (["plan", "pool", "--patch", "0", "32", "32"], "--patch"),
        (["run", "--pretrain-steps", "0"], "--pretrain-steps"),
        (["models", "info", "tsfm_test", "--in-channels", "0"], "--in-channels"),
    ],
)
def test_impossible_numbers_are_refused_where_they_are_parsed(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"error: argument {flag}: must be" in capsys.readouterr().err


def test_a_patch_the_network_cannot_take_is_one_line_before_any_folder(
    small_pool, tmp_path, capsys
):
    assert main(["models", "info", "tsfm_test", "--patch", "4", "4", "4"]) == 2
    assert "too small" in one_line_error(capsys.readouterr().err)
    run = tmp_path / "run"
    args = ["-q", "pretrain", str(small_pool), "-o", str(run), *TINY]
    assert main([*args, "--set", "patch_size=[4, 4, 4]"]) == 2
    assert "config key 'patch_size' [4, 4, 4] is too small" in one_line_error(
        capsys.readouterr().err
    )
    assert not run.exists()


def test_a_finished_run_whose_checkpoints_were_deleted_is_not_overwritten(small_pool, tmp_path):
    """Freeing disk by deleting checkpoints must not let a new run replace the old run's log."""
    run = tmp_path / "run"
    args = ["-q", "pretrain", str(small_pool), "-o", str(run), *TINY]
    assert main(args) == 0
    shutil.rmtree(run / "checkpoints")
    log = (run / "metrics.jsonl").read_text()
    assert main(args) == 2
    assert (run / "metrics.jsonl").read_text() == log
