"""Promptable segmentation: batches with simulated prompts, the loss, the metric, a real-data run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.inference.predictor import Predictor
from medfoundry.runs.checkpoint import load_checkpoint
from medfoundry.tasks import TASKS, PromptableTask, task_from_description
from medfoundry.tasks.promptable import PROMPTED, choose_object, one_click_batch, prompt_batch
from medfoundry.training.config import TrainConfig, apply_overrides
from tests.conftest import FAST_FIT

LABELS = {"background": 0, "a": 1, "b": 2, "c": 3}


def _batch() -> dict:
    label = torch.zeros(3, 16, 24, 24, dtype=torch.int64)
    label[0, 4:12, 6:18, 6:18] = 1
    label[0, 4:12, 6:18, 18:22] = 2
    label[1, 2:10, 2:10, 2:10] = 3  # class 3: not annotated by sample 1's dataset
    label[2, 2:10, 2:10, 2:10] = 3  # sample 2's dataset annotates it
    valid = torch.tensor([[True, True, False], [True, True, False], [True, True, True]])
    return {
        "image": torch.randn(3, 1, 16, 24, 24),
        "label": label,
        "valid": valid,
        "case_ids": ["d/0", "d/1", "e/2"],
        "index": 0,
    }


def test_prompted_batches_are_reproducible_and_prompt_only_annotated_present_objects():
    batch = _batch()
    a, b = prompt_batch(batch, [1, 2, 3]), prompt_batch(batch, [1, 2, 3])
    assert a["image"].shape == (3, 5, 16, 24, 24)
    assert torch.equal(a["image"], b["image"]) and a["prompts"] == b["prompts"]
    assert torch.equal(a["image"][:, :1], batch["image"])
    assert not a["prompted"][1]  # nothing annotated is present
    assert a["object"][1].sum() == 0 and a["image"][1, 1:].sum() == 0
    seen = set()
    for seed in range(30):
        p = prompt_batch(batch, seed)
        if p["prompted"][0]:
            obj = p["object"][0].bool()
            classes = set(p["prompts"][0]["classes"])
            assert classes <= {1, 2} and torch.equal(
                obj, torch.isin(batch["label"][0], torch.tensor(sorted(classes)))
            )
            seen.add(tuple(sorted(classes)))
    assert {(1,), (2,)} <= seen  # each annotated class, sometimes their union


def test_choose_object_skips_classes_too_small_to_click():
    label = np.zeros((8, 8, 8), dtype=np.int64)
    label[0, 0, :3] = 1  # 3 voxels
    mask, ids = choose_object(label, [1], np.random.default_rng(0))
    assert mask is None and ids == []


def test_the_loss_trains_the_prompted_channel_only_where_prompted():
    task = PromptableTask(LABELS)
    assert task.outputs.channels == ("a", "b", "c", PROMPTED) and task.prompt_channels == 4
    batch = prompt_batch(_batch(), 5)
    batch["prompted"] = torch.tensor([True, False, False])
    batch["object"][0] = (batch["label"][0] == 1).float()
    out = torch.zeros(3, 4, 16, 24, 24, requires_grad=True)
    task.loss(out, batch).backward()
    g = out.grad[:, 3].abs().flatten(1).sum(1)
    assert g[0] > 0 and g[1] == 0 and g[2] == 0
    assert out.grad[2, 2].abs().sum() > 0 and out.grad[0, 2].abs().sum() == 0  # partial labels
    # A perfect prompted answer costs less than a wrong one.
    good = torch.full((3, 4, 16, 24, 24), -10.0)
    good[0, 3][batch["object"][0] > 0] = 10.0
    assert task.loss(good, batch) < task.loss(-good, batch)


def test_one_click_validation_and_the_description_round_trip():
    task = PromptableTask(LABELS)
    batch = one_click_batch(_batch(), task.seg.names, 0)
    assert batch["object_names"] == ["a", None, "c"]
    logits = torch.full((3, 4, 16, 24, 24), -5.0)
    logits[:, 3] = torch.where(batch["object"] > 0, 5.0, -5.0)
    metric = task.new_metric(pooled=True)
    task.update_metric(metric, logits, batch)
    assert metric.summary() == {
        "val/d/a@1click": 1.0,
        "val/d/mean": 1.0,
        "val/e/c@1click": 1.0,
        "val/e/mean": 1.0,
        "val/mean": 1.0,
    }
    d = {"task": task.describe(), "labels": LABELS, "model": {"head": task.head()}}
    again = task_from_description(d)
    assert isinstance(again, PromptableTask) and again.outputs == task.outputs
    assert "promptable" in TASKS
    cfg = apply_overrides(TrainConfig(), ["task=promptable", "loss=softmax"])
    with pytest.raises(MedfoundryError, match="loss=partial"):
        PromptableTask.from_config(cfg, LABELS)


def test_promptable_training_on_real_data_resumes_exactly_and_predicts_automatically(
    real_small_pool, promptable_run
):
    cfg = apply_overrides(TrainConfig(), ["model=tsfm_test", "task=promptable", *FAST_FIT])
    meta = load_checkpoint(promptable_run, weights=False).meta
    assert meta["task"]["name"] == "promptable" and meta["run"]["splits"]["train"]
    assert meta["model"]["in_channels"] == meta["plan"]["in_channels"] + 4
    assert meta["task"]["outputs"]["channels"][-1] == PROMPTED
    # The automatic mode: predict reads the class channels, with empty prompt maps.
    predictor = Predictor.from_checkpoint(promptable_run, "cpu")
    assert PROMPTED not in predictor.class_names and predictor.class_names
    # Batches after a resume carry the prompts the uninterrupted run drew.
    from medfoundry.training import distributed as D
    from medfoundry.training.setup import build_training

    t = build_training(real_small_pool, cfg, D.DistInfo())
    batches = [next(t.batches) for _ in range(3)]
    resumed = next(t.task.train_batches(t.source, 2, (0, 1)))
    assert torch.equal(resumed["image"], batches[2]["image"])
    assert json.dumps(resumed["prompts"]) == json.dumps(batches[2]["prompts"])
    assert resumed["interaction_rounds"] == batches[2]["interaction_rounds"]
    # Every rank of a step runs the same rounds of the network (FSDP needs the same passes).
    for step in range(6):
        rounds = {
            next(t.task.train_batches(t.source, step, (rank, 2)))["interaction_rounds"]
            for rank in (0, 1)
        }
        assert len(rounds) == 1


def test_the_step_continues_the_interaction_on_the_network_s_own_errors():
    """``interact`` asks the network (here: one that answers 'nothing' everywhere) and adds a
    positive click at the centre of the missed object, with that answer as the previous mask."""
    task = PromptableTask(LABELS)

    class Blind(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4, *x.shape[2:]), -5.0)

    batch = prompt_batch(_batch(), 0)
    assert task.interact(batch, Blind()) is batch  # no rounds drawn: the batch as it was
    for seed in range(40):
        batch = {**prompt_batch(_batch(), seed), "interaction_rounds": 2}
        before = [len(p["points"]) for p in batch["prompts"]]
        after = task.interact(batch, Blind())
        if not batch["prompted"].any():
            continue
        for b in np.flatnonzero(after["prompted"].numpy()):
            points = after["prompts"][b]["points"]
            assert len(points) > before[b] and all(p[3] for p in points[before[b] :])
            z, y, x = points[-1][:3]
            assert after["object"][b, z, y, x] == 1  # inside the missed object
            assert after["image"][b, 1, z, y, x] == 1  # drawn in the positive map
            assert after["prompts"][b]["previous_voxels"] == 0  # the blind answer
        again = task.interact({**prompt_batch(_batch(), seed), "interaction_rounds": 2}, Blind())
        assert again["prompts"] == after["prompts"]  # the same seed, the same clicks
        return
    raise AssertionError("no batch iterated in 40 seeds")
