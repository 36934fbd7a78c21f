"""The classification task: head, loss weights, decoding, batches and their augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfoundry.data.augment_config import AugmentConfig
from medfoundry.data.classification import prepare_pool
from medfoundry.models.registry import create_network
from medfoundry.pool import load_pool
from medfoundry.tasks import ClassificationTask, task_from_description
from medfoundry.tasks.base import BatchSource
from medfoundry.tasks.classification import _shift, augment_batch


def test_head_pools_the_bottleneck_and_skips_the_decoder():
    task = ClassificationTask(["a", "b", "c"])
    net = create_network(
        "tsfm_test",
        1,
        task.head(),
        patch_size=[1, 28, 28],
        strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2]],
    )
    out = net(torch.randn(3, 1, 1, 28, 28))
    assert out.shape == (3, 3)
    assert not net.parameter_groups()["decoder"]  # a classifier carries no decoder
    probs = task.decode(out)
    assert torch.allclose(probs.sum(1), torch.ones(3))


def test_binary_has_one_logit_and_weights_against_imbalance():
    task = ClassificationTask(["normal", "pneumonia"])
    assert task.outputs.channels == ("pneumonia",) and task.head()["num_outputs"] == 1
    w = task._class_weights(np.array([0] * 10 + [1] * 30))
    assert w.tolist() == pytest.approx([10 / 30])  # positive weight n_neg / n_pos
    probs = task.decode(torch.tensor([[0.0], [2.0]]))
    assert probs[:, 1].tolist() == pytest.approx([0.5, 1 / (1 + np.exp(-2))])
    multi = ClassificationTask(["a", "b", "c"])
    assert multi._class_weights(np.array([0] * 6 + [1] * 3 + [2] * 3)).tolist() == pytest.approx(
        [12 / 18, 12 / 9, 12 / 9]
    )
    task.thresholds = [0.3]
    again = task_from_description({"task": task.describe(), "labels": {}, "model": {"head": {}}})
    assert again.thresholds == [0.3] and again.binary


def test_shift_moves_content_and_repeats_edges():
    v = torch.arange(5.0).view(1, 1, 1, 5)  # (C, Z, Y, X)
    assert _shift(v, np.array([0, 0, 2]))[0, 0, 0].tolist() == [0, 0, 0, 1, 2]
    assert _shift(v, np.array([0, 0, -1]))[0, 0, 0].tolist() == [1, 2, 3, 4, 4]


def test_2d_augmentation_never_moves_along_z_and_batches_are_reproducible(tmp_path):
    x = torch.randn(8, 1, 1, 28, 28)
    out = augment_batch(x, np.random.default_rng(0))
    assert out.shape == x.shape
    again = augment_batch(x, np.random.default_rng(0))
    assert torch.equal(out, again)
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "toy.npz",
        train_images=rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        train_labels=np.array([[0]] * 15 + [[1]] * 5, np.uint8),
        val_images=rng.integers(0, 255, (7, 28, 28), dtype=np.uint8),
        val_labels=np.array([[0]] * 4 + [[1]] * 3, np.uint8),
    )
    pool_dir = prepare_pool(tmp_path / "toy.npz", tmp_path / "pool")
    cases = load_pool(pool_dir)["cases"]
    src = BatchSource(
        pool_dir,
        [c for c in cases if c["split"] == "train"],
        [c for c in cases if c["split"] == "val"],
        [1, 28, 28],
        4,
        0,
        AugmentConfig(),
    )
    task = ClassificationTask(["class_0", "class_1"])
    a = list(zip(range(3), task.train_batches(src, 0, (0, 1)), strict=False))
    b = next(task.train_batches(src, 2, (0, 1)))  # resume at step 2: the same batch
    assert torch.equal(a[2][1]["image"], b["image"]) and a[2][1]["case_ids"] == b["case_ids"]
    assert task.weights.tolist() == pytest.approx([3.0])
    val = list(task.validation_batches(src))
    assert sum(len(v["label"]) for v in val) == 7
    metric = task.new_metric()
    for v in val:  # a perfect score: logit = +-5 by the label
        task.update_metric(metric, (v["label"].float()[:, None] * 10 - 5), v)
    assert metric.summary()["val/mean"] == 1.0
