"""Pretraining on the real pool: run folder, self-describing checkpoints, exact resume after SIGKILL,
continuing a finished run, k steps in memory, and DDP/FSDP with two CPU processes (the API and the
user's torchrun command with default settings)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medfoundry import MedfoundryError
from medfoundry.cli.main import main
from medfoundry.runs.checkpoint import load_checkpoint, save_checkpoint
from medfoundry.runs.metrics import read_metrics
from medfoundry.training.config import TrainConfig, apply_overrides
from medfoundry.training.fit import pretrain

FAST = [
    "model=tsfm_test",
    "epochs=2",
    "iters_per_epoch=4",
    "batch_size=2",
    "patch_size=[16, 32, 32]",
    "data.num_workers=1",
    "data.val_max_cases=1",
    "ckpt_every_steps=1",
    "threads=1",
]


def _cfg(extra=()):
    return apply_overrides(TrainConfig(), [*FAST, *extra])


def test_run_folder_metrics_and_checkpoint(real_small_pool, tmp_path):
    out = pretrain(real_small_pool, tmp_path / "run", _cfg(), progress=False)
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "plan.json",
        "labels.json",
        "splits.json",
        "metrics.jsonl",
        "progress.png",
        "checkpoints/latest.safetensors",
        "checkpoints/best.safetensors",
        "checkpoints/final.safetensors",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    rows = read_metrics(run)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 9))
    # Patches after each epoch, then the final weights on whole volumes.
    assert [(r["mode"], r["step"], r.get("final")) for r in val] == [
        ("patch", 4, None),
        ("patch", 8, None),
        ("full", 8, True),
    ]
    assert {"loss", "lr", "step_time_s", "data_wait_frac"} <= set(train[0])
    for r in val:
        assert {
            "val/hippocampus/hippocampus_anterior",
            "val/acdc/myocardium",
            "val/acdc/mean",
            "val/mean",
        } <= set(r)
    ckpt = load_checkpoint(run / "checkpoints" / "final.safetensors", training=True)
    meta = ckpt.meta
    assert meta["state"]["step"] == 8 and meta["model"]["name"] == "tsfm_test"
    assert meta["task"] == {
        "name": "segmentation",
        "outputs": {
            "activation": "sigmoid",
            "channels": [
                "hippocampus_anterior",
                "hippocampus_posterior",
                "right_ventricle",
                "myocardium",
                "left_ventricle",
            ],
        },
    }
    assert meta["labels"]["myocardium"] == 4 and meta["plan"]["format"] == "medfoundry.plan/1"
    assert {"config", "medfoundry_version", "datasets"} <= set(meta)
    assert {"splits", "pool_dir", "init", "trainable_parameters"} <= set(meta["run"])
    assert ckpt.optimizer["state"] and ckpt.rng is not None and ckpt.weights
    assert out["step"] == 8 and 0 <= out["data_wait_frac_mean"] < 1
    assert out["best_val_mean"] == max(r["val/mean"] for r in val if r["mode"] == "patch")
    assert out["final_val_mean"] == val[-1]["val/mean"]
    # One writer: final and latest are one file written once (hard links), best is its own save.
    ck = run / "checkpoints"
    assert (ck / "final.safetensors").stat().st_ino == (ck / "latest.safetensors").stat().st_ino
    assert not list(ck.glob(".tmp-*"))
    with pytest.raises(MedfoundryError, match="not empty"):
        pretrain(real_small_pool, run, _cfg(), progress=False)


def test_a_fixed_split_seed_keeps_the_validation_cases_of_another_training_seed(
    real_small_pool, tmp_path
):
    def splits(name, extra):
        one_step = ["epochs=1", "iters_per_epoch=1", "validation.every=0", "validation.final=false"]
        one_step += ["data.num_workers=0"]
        pretrain(real_small_pool, tmp_path / name, _cfg([*one_step, *extra]), progress=False)
        return json.loads((tmp_path / name / "splits.json").read_text())

    seed0 = splits("seed0", ["seed=0"])
    assert splits("seed1", ["seed=1"])["val"] != seed0["val"]
    assert splits("seed1_split0", ["seed=1", "data.split_seed=0"]) == seed0
    with pytest.raises(MedfoundryError, match=r"'data.split_seed': must be in \[0, inf\), not -1"):
        splits("negative", ["data.split_seed=-1"])
    assert not (tmp_path / "negative").exists()


def test_sigkill_then_resume_matches_the_uninterrupted_run(real_small_pool, tmp_path):
    extra = ["epochs=3", "val_every=0", "seed=3"]
    pretrain(real_small_pool, tmp_path / "full", _cfg(extra), progress=False)
    full = [r["loss"] for r in read_metrics(tmp_path / "full") if r["kind"] == "train"]

    sets = sum((["--set", s] for s in [*FAST, *extra]), [])
    cmd = [
        sys.executable,
        "-m",
        "medfoundry.cli.main",
        "-q",
        "pretrain",
        str(real_small_pool),
        "-o",
        str(tmp_path / "cut"),
        *sets,
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "MEDFOUNDRY_SLOW_TEST_DELAY": "0"})
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (
        not metrics.exists() or len(metrics.read_text().splitlines()) < 6
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-epoch 2 (4 steps per epoch)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 6 <= done < 12, "the run should have been killed part-way"
    out = pretrain(None, tmp_path / "cut", resume=True, progress=False)
    resumed = [r["loss"] for r in read_metrics(tmp_path / "cut") if r["kind"] == "train"]
    assert out["step"] == 12 and len(resumed) == 12
    assert (
        max(abs(a - b) for a, b in zip(full, resumed, strict=True)) < 1e-4
    )  # the stated tolerance


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_cpu_processes_end_with_identical_weights(real_small_pool, tmp_path, fsdp):
    script = tmp_path / "ddp.py"
    script.write_text(
        "import json, os, sys\n"
        "from medfoundry.training.config import TrainConfig, apply_overrides\n"
        "from medfoundry.training.fit import pretrain\n"
        f"cfg = apply_overrides(TrainConfig(), {FAST + ['epochs=1', 'val_every=0', 'data.num_workers=0', f'fsdp={fsdp}']!r})\n"
        "out = pretrain(sys.argv[1], sys.argv[2], cfg, progress=False)\n"
        "open(os.path.join(sys.argv[3], 'rank%s.json' % os.environ['RANK']), 'w').write(json.dumps(out))\n"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(29577 + fsdp),
            str(script),
            str(real_small_pool),
            str(tmp_path / "run"),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["step"] == r1["step"] == 4
    assert r0["weights_sha256"] == r1["weights_sha256"]
    assert r0["loss"] != r1["loss"]  # each rank trained on its own batches
    import torch

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.safetensors")
    assert ckpt.meta["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt.weights.values())


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_the_readme_torchrun_command_with_default_settings(real_small_pool, tmp_path, fsdp):
    """The user's path: the CLI under torchrun, default workers (2) and validation (patches after
    the epoch, whole volumes at the end). Rank 0 used to wait at a barrier rank 1 never reached."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-port", str(29587 + fsdp), "-m", "medfoundry.cli.main", "-q", "pretrain"]
    cmd += [str(real_small_pool), "-o", str(run), "--epochs", "1", "--iters-per-epoch", "4"]
    cmd += ["--batch-size", "2", "--model", "tsfm_test", "--set", f"fsdp={str(fsdp).lower()}"]
    # Two validation cases: the default modes and barriers, without 70 s of whole-volume FSDP
    # forwards on 2 cores (each rank gathers every layer's weights for every tile).
    cmd += ["--set", "validation.max_cases=2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step 4: loss" in done.stdout and "final (whole volumes)" in done.stdout
    val = [r for r in read_metrics(run) if r["kind"] == "val"]
    assert [(r["mode"], r["step"], r.get("final")) for r in val] == [
        ("patch", 4, None),
        ("full", 4, True),
    ]
    assert all(0 <= r["val/mean"] <= 1 for r in val)
    for name in ("latest", "best", "final"):
        assert (
            load_checkpoint(run / "checkpoints" / f"{name}.safetensors").meta["state"]["step"] == 4
        )


def test_cuda_device_without_index_gets_the_current_one(monkeypatch):
    """``--device cuda`` in a single process: set_device and the memory counters need an indexed
    device (found on the lent H100: an unindexed one failed before the first step)."""
    import torch

    from medfoundry.training.distributed import DistInfo, resolve_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(d))
    assert resolve_device("cuda", DistInfo()) == torch.device("cuda", 0)
    assert resolve_device("cuda", DistInfo(rank=1, world=2, local_rank=1)) == torch.device(
        "cuda", 1
    )
    assert [d.index for d in chosen] == [0, 1]
    assert resolve_device("cpu", DistInfo()) == torch.device("cpu") and len(chosen) == 2


@pytest.mark.parametrize(
    "name, message",
    [("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device"), ("cuda", "no CUDA GPU")],
)
def test_bad_or_missing_device_is_a_one_line_error_before_the_run_folder(
    real_small_pool,
    tmp_path,
    capsys,
    monkeypatch,
    name,
    message,
):
    import torch

    from medfoundry.cli.main import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    argv = ["-q", "pretrain", str(real_small_pool), "-o", str(run), "--model", "tsfm_test"]
    assert main([*argv, "--set", f"device={name}"]) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and "internal error" not in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_a_failed_checkpoint_write_keeps_the_old_one_and_no_partial_file(
    pretrained, tmp_path, monkeypatch
):
    import safetensors.torch

    ckpt = load_checkpoint(pretrained / "checkpoints" / "final.safetensors", training=True)
    path = tmp_path / "latest.safetensors"
    save_checkpoint(path, ckpt.meta, ckpt.weights, ckpt.optimizer, ckpt.rng)

    def disk_full(tensors, f, metadata=None):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    meta = {**ckpt.meta, "state": {**ckpt.meta["state"], "step": 99}}
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, meta, ckpt.weights, ckpt.optimizer, ckpt.rng)
    assert load_checkpoint(path).meta["state"]["step"] == ckpt.meta["state"]["step"]
    # no .tmp-* left to fill the disk
    assert [p.name for p in tmp_path.iterdir()] == ["latest.safetensors"]


def test_a_finished_run_continues_to_more_epochs(real_small_pool, tmp_path, capsys):
    """nnU-Net's ``--c``: ``pretrain --resume RUN --epochs N`` on a finished run (it used to end in
    ``internal error: KeyError: 'step'``) continues to the new length, with the learning rate of the
    new length's schedule; a shorter length is a one-line error."""
    run = tmp_path / "run"
    extra = ["validation.every=0", "validation.final=false", "ckpt_every_steps=50"]
    pretrain(real_small_pool, run, _cfg(extra), progress=False)  # 2 epochs of 4 steps
    assert main(["-q", "pretrain", "--resume", str(run)]) == 0  # finished: nothing to do
    assert capsys.readouterr().out.startswith("step 8: loss ")
    assert main(["-q", "pretrain", "--resume", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "medfoundry: error: the run has trained 8 steps (2 epochs of 4); --epochs 1 would end "
        "before that"
    )
    assert main(["-q", "pretrain", "--resume", str(run), "--epochs", "3"]) == 0
    assert capsys.readouterr().out.startswith("step 12: loss ")
    train = [r for r in read_metrics(run) if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    lr0 = _cfg().optim.lr  # the rate each step used:
    assert train[7]["lr"] == pytest.approx(lr0 * (1 - 7 / 8) ** 0.9)  # the 8-step schedule
    assert train[8]["lr"] == pytest.approx(lr0 * (1 - 8 / 12) ** 0.9)  # then the 12-step one
    final = load_checkpoint(run / "checkpoints" / "final.safetensors")
    assert final.meta["state"]["step"] == 12 and final.meta["config"]["epochs"] == 3
    assert main(["-q", "pretrain", "--resume", str(run), "--set", "seed=1"]) == 2
    assert "only --epochs may change" in capsys.readouterr().err


def test_full_mode_validates_whole_volumes_each_time_and_reuses_the_last_one(
    real_small_pool, tmp_path
):
    extra = ["iters_per_epoch=2", "validation.mode=full", "data.num_workers=0"]
    out = pretrain(real_small_pool, tmp_path / "run", _cfg(extra), progress=False)
    val = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "val"]
    assert [(r["mode"], r["step"], r.get("final")) for r in val] == [
        ("full", 2, None),
        ("full", 4, None),
        ("full", 4, True),  # the same weights: the last validation's figures, not a second run
    ]
    keys = [k for k in val[1] if k.startswith("val/")]
    assert keys and all(val[2][k] == val[1][k] for k in keys)
    assert out["final_val_mean"] == val[1]["val/mean"] == out["best_val_mean"]
