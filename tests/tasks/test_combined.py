"""Supervised + self-supervised by turns (``--objective both``) on one network with both heads."""

from __future__ import annotations

import json

import numpy as np
import torch

from medfoundry.cli.main import main
from medfoundry.data.augment_config import AugmentConfig
from medfoundry.io import read_label
from medfoundry.pool import load_pool
from medfoundry.runs.checkpoint import load_checkpoint
from medfoundry.tasks import BatchSource, CombinedTask
from medfoundry.training.config import TrainConfig
from medfoundry.transfer.weights import segmentation_part
from tests.conftest import FAST_FIT

TINY = ["--model", "tsfm_test", *(x for kv in FAST_FIT for x in ("--set", kv))]


def _task_and_source(pool_dir):
    pool = load_pool(pool_dir)
    src = BatchSource(
        pool_dir, pool["cases"][:6], [], [16, 32, 32], 2, 3, AugmentConfig(), num_workers=0
    )
    return CombinedTask.from_config(TrainConfig(), pool["labels"], 1), src


def test_batches_alternate_and_a_resumed_run_draws_the_same(real_small_pool):
    task, src = _task_and_source(real_small_pool)
    stream = task.train_batches(src, 0, (0, 1))
    batches = [next(stream) for _ in range(6)]
    assert ["mask" in b for b in batches] == [False, True] * 3
    for start in (3, 4):
        first = next(task.train_batches(src, start, (0, 1)))
        assert torch.equal(first["image"], batches[start]["image"])
        assert ("mask" in first) == ("mask" in batches[start])


def test_each_batch_trains_its_own_head(real_small_pool):
    task, src = _task_and_source(real_small_pool)
    stream = task.train_batches(src, 0, (0, 1))
    seg_batch, ssl_batch = next(stream), next(stream)
    k = task.num_seg
    out = torch.randn(2, k + 1, 16, 32, 32, requires_grad=True)
    task.loss(out, seg_batch).backward()
    assert out.grad[:, :k].abs().sum() > 0 and out.grad[:, k:].abs().sum() == 0
    out.grad = None
    task.loss(out, ssl_batch).backward()
    assert out.grad[:, :k].abs().sum() == 0 and out.grad[:, k:].abs().sum() > 0


def test_a_concat_head_is_seen_as_its_segmentation_part():
    state = {
        "stem.0.weight": torch.zeros(1),
        "heads.parts.0.convs.0.weight": torch.ones(2, 8, 1, 1, 1),
        "heads.parts.1.recon.weight": torch.ones(1, 8, 1, 1, 1),
    }
    head = {
        "kind": "concat",
        "parts": [
            {"kind": "segmentation", "num_outputs": 2},
            {"kind": "reconstruction", "num_outputs": 1},
        ],
    }
    view, channels = segmentation_part(state, head, ["a", "b", "image_0"])
    assert set(view) == {"stem.0.weight", "heads.convs.0.weight"} and channels == ["a", "b"]
    assert segmentation_part(state, {"kind": "segmentation"}, ["a"]) == (state, ["a"])


def test_both_pretrains_predicts_and_fine_tunes_keeping_its_class_rows(
    real_small_pool, hippo_dir, tmp_path
):
    run = tmp_path / "both"
    assert (
        main(["-q", "pretrain", str(real_small_pool), "-o", str(run), *TINY, "--objective", "both"])
        == 0
    )
    meta = load_checkpoint(run, weights=False).meta
    assert meta["task"]["name"] == "segmentation+masked"
    assert [p["kind"] for p in meta["model"]["head"]["parts"]] == ["segmentation", "reconstruction"]
    image = sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]
    out = tmp_path / "pred"
    args = ["-q", "predict", "-m", str(run), "-i", str(image), "-o", str(out), "--device", "cpu"]
    assert main([*args, "--dataset", "hippocampus"]) == 0
    assert set(np.unique(read_label(out / image.name).array)) <= {0, 1, 2}
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "-q",
                "finetune",
                "--from",
                str(run),
                "--data",
                str(real_small_pool),
                "-o",
                str(ft),
                *TINY[2:],
                "--set",  # the default recipe starts a new head: load every group
                "init_groups=[stem, encoder, bottleneck, decoder, heads]",
            ]
        )
        == 0
    )
    init = json.loads((ft / "init.json").read_text())
    assert init["head"]["new"] == [] and init["head"]["kept"]  # every class row came along
    assert load_checkpoint(ft, weights=False).meta["task"]["name"] == "segmentation"
