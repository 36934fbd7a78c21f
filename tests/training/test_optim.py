"""Learning rates per parameter group: the head at ``lr``, the body scaled, layer decay by depth."""

from __future__ import annotations

import pytest
import torch

from medfoundry.models.registry import create_network
from medfoundry.tasks.segmentation import SegmentationTask
from medfoundry.training.config import OptimConfig
from medfoundry.training.optim import lr_scales, make_optimizer, make_scheduler


def test_scales_fall_with_distance_from_the_head():
    s = lr_scales(OptimConfig(body_lr_scale=0.5, layer_decay=0.5))
    assert s == {"heads": 1.0, "decoder": 0.5, "bottleneck": 0.25, "encoder": 0.125, "stem": 0.0625}
    assert set(lr_scales(OptimConfig()).values()) == {1.0}


def test_groups_get_their_rates_and_the_schedule_keeps_the_ratio():
    torch.manual_seed(0)
    head = SegmentationTask({"background": 0, "liver": 1, "kidney": 2}, "sigmoid").head()
    model = create_network("tsfm_test", 1, head, patch_size=[16, 32, 32])
    o = OptimConfig(lr=0.01, body_lr_scale=0.1, layer_decay=0.5)
    opt = make_optimizer(o, model, model.parameter_groups())
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # every parameter, once
    lrs = [g["lr"] for g in opt.param_groups]  # stem, encoder, bottleneck, decoder, heads
    assert lrs == pytest.approx([0.01 * 0.1 * 0.125, 0.01 * 0.1 * 0.25, 0.001 * 0.5, 0.001, 0.01])
    sched = make_scheduler(opt, 10, 0.9)
    for _ in range(5):
        opt.step()
        sched.step()
    now = [g["lr"] for g in opt.param_groups]
    assert now[-1] < 0.01 and now[0] / now[-1] == pytest.approx(lrs[0] / lrs[-1])
    # Without a scale or decay: one group, as before (old checkpoints resume).
    assert len(make_optimizer(OptimConfig(), model, model.parameter_groups()).param_groups) == 1
