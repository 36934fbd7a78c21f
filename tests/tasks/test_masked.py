"""Masked-volume modelling (the self-supervised task): masks, loss, and a run on real data."""

from __future__ import annotations

import json

import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.inference.predictor import Predictor
from medfoundry.runs.checkpoint import load_checkpoint
from medfoundry.runs.metrics import read_metrics
from medfoundry.tasks.masked import block_mask, block_size, masked_batch, masked_l1
from medfoundry.training.config import TrainConfig, apply_overrides
from medfoundry.training.fit import pretrain
from tests.conftest import FAST_FIT


def test_a_block_mask_hides_the_asked_share_of_whole_blocks():
    gen = torch.Generator().manual_seed(0)
    mask = block_mask((16, 32, 32), (2, 4, 4), 0.6, gen)
    assert mask.shape == (16, 32, 32)
    assert mask.sum() == round(0.6 * 512) * 2 * 4 * 4  # 8 x 8 x 8 blocks
    blocks = mask.view(8, 2, 8, 4, 8, 4)
    assert torch.all(blocks.all(dim=(1, 3, 5)) == blocks.any(dim=(1, 3, 5)))  # whole blocks
    edge = block_mask((5, 7, 9), (2, 4, 4), 0.5, gen)  # blocks cut by the edge
    assert edge.shape == (5, 7, 9) and 0 < edge.float().mean() < 1
    assert block_size([16, 32, 32]) == (2, 4, 4) and block_size([4, 8, 8]) == (1, 1, 1)


def test_masks_are_fixed_by_the_seed_and_shared_by_the_channels():
    image = torch.randn(3, 2, 8, 16, 16)  # (B, C, Z, Y, X)
    a, b = masked_batch({"image": image}, 5), masked_batch({"image": image}, 5)
    assert torch.equal(a["mask"], b["mask"]) and a["mask"].shape == (3, 1, 8, 16, 16)
    assert not torch.equal(a["mask"], masked_batch({"image": image}, 6)["mask"])
    assert not torch.equal(a["mask"][0], a["mask"][1])  # one mask per sample
    hidden = a["mask"].expand_as(image)
    assert torch.all(a["image"][hidden] == 0) and torch.equal(a["image"][~hidden], image[~hidden])
    assert torch.equal(a["target"], image)


def test_the_loss_counts_only_the_hidden_voxels():
    target = torch.randn(2, 1, 4, 8, 8)
    mask = torch.zeros(2, 1, 4, 8, 8, dtype=torch.bool)
    mask[:, :, :2] = True
    out = target.clone()
    out[~mask.expand_as(out)] += 100.0  # visible voxels are not scored
    assert masked_l1(out, target, mask) == 0
    out[mask.expand_as(out)] += 0.5
    assert torch.isclose(masked_l1(out, target, mask), torch.tensor(0.5))


def test_batch_k_is_the_same_whether_a_run_starts_or_resumes_there(real_small_pool):
    """Masks are a function of the seed and the batch index, so a resumed run masks exactly as the
    uninterrupted one (the loader's patches already are)."""
    from medfoundry.data.augment_config import AugmentConfig
    from medfoundry.pool import load_pool
    from medfoundry.tasks import BatchSource, MaskedVolumeTask

    pool = load_pool(real_small_pool)
    src = BatchSource(
        real_small_pool, pool["cases"][:6], [], [16, 32, 32], 2, 7, AugmentConfig(), num_workers=0
    )
    task = MaskedVolumeTask(1, len(pool["labels"]) - 1)
    from_start = task.train_batches(src, 0, (0, 1))
    batches = [next(from_start) for _ in range(4)]
    resumed = next(task.train_batches(src, 3, (0, 1)))
    for key in ("image", "target", "mask"):
        assert torch.equal(resumed[key], batches[3][key])
    assert not torch.equal(batches[2]["mask"], batches[3]["mask"])


def _cfg(extra=()) -> TrainConfig:
    return apply_overrides(TrainConfig(), ["model=tsfm_test", "task=masked", *FAST_FIT, *extra])


def test_ssl_pretraining_on_real_data_then_fine_tuning_for_segmentation(real_small_pool, tmp_path):
    extra = ["epochs=2", "seed=4", "data.num_workers=1"]
    full = pretrain(real_small_pool, tmp_path / "full", _cfg(extra), progress=False)
    ckpt = load_checkpoint(tmp_path / "full", weights=False)
    assert ckpt.meta["task"]["name"] == "masked"
    assert ckpt.meta["model"]["head"] == {"kind": "reconstruction", "num_outputs": 1}
    val = [r for r in read_metrics(tmp_path / "full") if r["kind"] == "val"]
    assert val and all(r["val/l1"] > 0 and r["val/mean"] == -r["val/l1"] for r in val)
    assert full["step"] == 6
    with pytest.raises(MedfoundryError, match="outputs intensities, not labels"):
        Predictor.from_checkpoint(tmp_path / "full", "cpu")

    from medfoundry.transfer.finetune import finetune

    ft_cfg = apply_overrides(TrainConfig(), [*FAST_FIT, "task=segmentation"])
    out = finetune(tmp_path / "full", real_small_pool, tmp_path / "ft", ft_cfg, progress=False)
    init = json.loads((tmp_path / "ft" / "init.json").read_text())
    assert init["counts"]["loaded"] > 0.9 * sum(init["counts"].values())  # the whole body
    assert load_checkpoint(tmp_path / "ft", weights=False).meta["task"]["name"] == "segmentation"
    assert out["step"] == 3


def test_the_objective_flag_sets_the_task():
    from medfoundry.cli.main import build_parser
    from medfoundry.cli.train_commands import config_from_flags

    for objective, task in [("ssl", "masked"), ("supervised", "segmentation")]:
        args = build_parser().parse_args(["pretrain", "p", "-o", "r", "--objective", objective])
        assert config_from_flags(args).task == task
    args = build_parser().parse_args(["finetune", "--from", "m", "--data", "d", "-o", "r"])
    assert args.objective is None  # fine-tuning keeps its default (segmentation)
