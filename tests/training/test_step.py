"""The loop's pieces: k steps from an in-memory state (no run folder) are the steps a run takes;
the model's parameter groups drive freezing; validation decodes with the task's one rule."""

from __future__ import annotations

import torch

from medfoundry.runs.checkpoint import load_checkpoint
from medfoundry.runs.metrics import read_metrics
from medfoundry.training import distributed as D
from medfoundry.training.config import TrainConfig, apply_overrides
from medfoundry.training.fit import pretrain
from medfoundry.training.setup import build_training
from medfoundry.training.step import run_steps
from tests.conftest import FAST_FIT

NO_VAL = ["validation.every=0", "validation.final=false", "epochs=1", "iters_per_epoch=4"]


def test_k_steps_in_memory_are_the_steps_of_a_run(real_small_pool, tmp_path):
    """run_steps from an in-memory state (no run folder, no validation) takes the steps of a run
    that validates (patches) after each of its epochs and writes checkpoints: validation and saving
    change nothing in the training."""
    cfg = apply_overrides(TrainConfig(), ["model=tsfm_test", *FAST_FIT, *NO_VAL])
    t = build_training(real_small_pool, cfg, D.DistInfo())
    records = run_steps(t.state, t.task, t.batches, 4, t.opts)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and t.state.step == 4
    assert not (tmp_path / "run").exists()
    with_val = ["epochs=2", "iters_per_epoch=2", "validation.every=1", "ckpt_every_steps=1"]
    cfg = apply_overrides(cfg, with_val)  # the same 4-step schedule, with validation
    out = pretrain(real_small_pool, tmp_path / "run", cfg, progress=False)
    assert [r["mode"] for r in read_metrics(tmp_path / "run") if r["kind"] == "val"] == 2 * [
        "patch"
    ]
    assert out["loss"] == records[-1]["loss"]
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "final.safetensors").weights
    for name, p in t.state.model.state_dict().items():
        torch.testing.assert_close(p, saved[name], rtol=0, atol=1e-6)


def test_freezing_follows_the_models_parameter_groups(real_small_pool):
    cfg = apply_overrides(TrainConfig(), ["model=tsfm_test", *FAST_FIT, *NO_VAL, "freeze=encoder"])
    t = build_training(real_small_pool, cfg, D.DistInfo())
    groups = t.state.model.parameter_groups()
    frozen = {g for g, ps in groups.items() if not any(p.requires_grad for _, p in ps)}
    assert frozen == {"stem", "encoder"}
    before = {n: p.detach().clone() for n, p in t.state.model.named_parameters()}
    run_steps(t.state, t.task, t.batches, 2, t.opts)
    for group, params in groups.items():
        moved = [not torch.equal(before[n], p) for n, p in params]
        assert (not any(moved)) if group in frozen else any(moved), group
