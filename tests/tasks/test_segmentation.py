"""The segmentation task: one decision rule against the voxel-by-voxel definition, the loss with
deep supervision, validation Dice pooled over patches or averaged over cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.evaluation import DiceAccumulator, dice_score
from medfoundry.tasks import TASKS, SegmentationTask, channel_names
from medfoundry.training.config import TaskName

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}


def _slow_decode(logits: np.ndarray, channels, activation, classes) -> np.ndarray:
    """Voxel by voxel, from the definition: the index (0 background, i: classes[i - 1])."""
    out = np.zeros(logits.shape[1:], dtype=np.int64)
    for idx in np.ndindex(*logits.shape[1:]):
        v = logits[(slice(None), *idx)].astype(np.float64)
        if activation == "sigmoid":
            p = [1 / (1 + np.exp(-v[channels.index(c)])) for c in classes]
            best = int(np.argmax(p)) if p else -1
            out[idx] = best + 1 if p and p[best] > 0.5 else 0
        else:
            sel = [v[0], *(v[channels.index(c)] for c in classes)]
            out[idx] = int(np.argmax(sel))
    return out


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
@pytest.mark.parametrize("classes", [["liver", "spleen", "kidney"], ["kidney", "liver"], []])
def test_decode_is_the_voxelwise_rule(activation, classes):
    task = SegmentationTask(LABELS, activation)
    torch.manual_seed(0)
    logits = torch.randn(len(task.outputs.channels), 3, 4, 5) * 3
    probs, index = task.decode(logits, classes)
    expected = _slow_decode(logits.numpy(), list(task.outputs.channels), activation, classes)
    assert np.array_equal(index.numpy(), expected)
    assert probs.shape == (1 + len(classes), 3, 4, 5)
    if activation == "softmax":
        torch.testing.assert_close(probs.sum(0), torch.ones(3, 4, 5))


def test_decode_ids_maps_to_global_ids():
    task = SegmentationTask(LABELS, "sigmoid")
    logits = torch.full((3, 1, 1, 2), -5.0)
    logits[2, 0, 0, 0] = 4.0  # kidney (id 3) sure at voxel 0, nothing at voxel 1
    assert task.decode_ids(logits, [1, 3]).tolist() == [[[3, 0]]]
    assert task.decode_ids(logits, [1]).tolist() == [[[0, 0]]]  # kidney not asked for


def test_channels_and_the_task_registry():
    assert channel_names(LABELS, "sigmoid") == ("liver", "spleen", "kidney")
    assert channel_names(LABELS, "softmax") == ("background", "liver", "spleen", "kidney")
    assert set(TASKS) == set(TaskName.__args__)  # the config's choices are the registered tasks
    task = SegmentationTask(LABELS, "softmax", deep_supervision=True)
    assert task.head() == {"kind": "segmentation", "num_outputs": 4, "deep_supervision": True}
    again = SegmentationTask.from_description(task.describe(), LABELS, task.head())
    assert again.outputs == task.outputs and again.deep_supervision
    # Decoding reads the stored channel order, not one rebuilt from the labels.
    stored = {
        "name": "segmentation",
        "outputs": {"activation": "sigmoid", "channels": ["kidney", "liver", "spleen"]},
    }
    head = {"kind": "segmentation", "num_outputs": 3, "deep_supervision": False}
    swapped = SegmentationTask.from_description(stored, LABELS, head)
    logits = torch.tensor([5.0, -5.0, -5.0]).view(3, 1, 1, 1)  # channel 0 sure
    assert swapped.decode_ids(logits, [1, 2, 3]).item() == 3  # kidney
    with pytest.raises(MedfoundryError, match="channels for a head of 4"):
        SegmentationTask.from_description(stored, LABELS, {**head, "num_outputs": 4})
    with pytest.raises(MedfoundryError, match="no channel for \\['spleen'\\]"):
        bad = {
            "name": "segmentation",
            "outputs": {"activation": "sigmoid", "channels": ["kidney", "liver", "x"]},
        }
        SegmentationTask.from_description(bad, LABELS, head)


def test_deep_supervision_loss_weights_lower_levels_by_halves():
    task = SegmentationTask(LABELS, "sigmoid", deep_supervision=True)
    torch.manual_seed(0)
    label = torch.randint(0, 4, (2, 8, 8, 8))
    valid = torch.ones(2, 3, dtype=torch.bool)
    outs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4)]
    batch = {"label": label, "valid": valid}
    small = label[:, ::2, ::2, ::2]  # nearest down-sampling by 2 picks every other voxel
    single = SegmentationTask(LABELS, "sigmoid")
    expected = single.loss(outs[0], batch) + 0.5 * single.loss(outs[1], {**batch, "label": small})
    torch.testing.assert_close(task.loss(outs, batch), expected / 1.5)


def test_validation_dice_pooled_and_per_case():
    rng = np.random.default_rng(0)
    pairs = [(rng.random((6, 6, 6)) > 0.5, rng.random((6, 6, 6)) > 0.6) for _ in range(3)]
    pooled, per_case = DiceAccumulator(pooled=True), DiceAccumulator(pooled=False)
    for p, r in pairs:
        pooled.add("ds", "liver", p, r)
        per_case.add("ds", "liver", p, r)
    per_case.add("ds", "liver", np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool))  # undefined
    all_p = np.concatenate([p.ravel() for p, _ in pairs])
    all_r = np.concatenate([r.ravel() for _, r in pairs])
    assert pooled.summary()["val/ds/liver"] == pytest.approx(dice_score(all_p, all_r), abs=1e-5)
    mean = np.mean([dice_score(p, r) for p, r in pairs])
    assert per_case.summary()["val/ds/liver"] == pytest.approx(mean, abs=1e-5)
    # Merging the states of two processes gives the figures of one that saw everything.
    a, b = DiceAccumulator(pooled=True), DiceAccumulator(pooled=True)
    for i, (p, r) in enumerate(pairs):
        (a if i % 2 else b).add("ds", "liver", p, r)
    a.merge([b.state])
    assert a.summary() == pooled.summary()
