"""Pretraining on the real pool: run folder, self-describing checkpoints, exact resume after SIGKILL,
and DDP with two CPU processes ending with identical weights."""

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
from medfoundry.training import checkpoint
from medfoundry.training.checkpoint import load_checkpoint, save_checkpoint
from medfoundry.training.config import TrainConfig, apply_overrides
from medfoundry.training.fit import pretrain
from medfoundry.training.runlog import read_metrics

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
        "checkpoints/latest.pt",
        "checkpoints/best.pt",
        "checkpoints/final.pt",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    rows = read_metrics(run)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in train] == list(range(1, 9)) and len(val) == 2
    assert {"loss", "lr", "step_time_s", "data_wait_frac"} <= set(train[0])
    assert {
        "val/hippocampus/hippocampus_anterior",
        "val/acdc/myocardium",
        "val/acdc/mean",
        "val/mean",
    } <= set(val[0])
    ckpt = load_checkpoint(run / "checkpoints" / "final.pt")
    assert (
        ckpt["step"] == 8
        and ckpt["model"]["name"] == "tsfm_test"
        and ckpt["model"]["activation"] == "sigmoid"
    )
    assert ckpt["labels"]["myocardium"] == 4 and ckpt["plan"]["format"] == "medfoundry.plan/1"
    assert {"optimizer", "scheduler", "rng", "config", "splits", "medfoundry_version"} <= set(ckpt)
    assert out["step"] == 8 and 0 <= out["data_wait_frac_mean"] < 1
    with pytest.raises(MedfoundryError, match="not empty"):
        pretrain(real_small_pool, run, _cfg(), progress=False)


def test_a_fixed_split_seed_keeps_the_validation_cases_of_another_training_seed(
    real_small_pool, tmp_path
):
    def splits(name, extra):
        one_step = ["epochs=1", "iters_per_epoch=1", "val_every=0", "data.num_workers=0"]
        pretrain(real_small_pool, tmp_path / name, _cfg([*one_step, *extra]), progress=False)
        return json.loads((tmp_path / name / "splits.json").read_text())

    seed0 = splits("seed0", ["seed=0"])
    assert splits("seed1", ["seed=1"])["val"] != seed0["val"]
    assert splits("seed1_split0", ["seed=1", "data.split_seed=0"]) == seed0
    with pytest.raises(MedfoundryError, match="'data.split_seed': a seed is 0 or more, not -1"):
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

    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


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


def test_a_failed_checkpoint_write_keeps_the_old_one_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})

    def disk_full(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no .tmp-* left to fill the disk
