"""Validation during and at the end of training, with the task's own decoding and metric.

- :func:`validate_patches` (``validation.mode: patch``, the default during training): a fixed set of
  validation patches per dataset (drawn like training patches, without augmentation, the same set
  every time), scored with the task's metric pooled over all patches (segmentation: nnU-Net's pseudo
  Dice). Its cost is ``patches x patch size``, whatever the size of the volumes.
- :func:`validate_volumes` (``mode: full``, and ``validation.final`` at the end): sliding-window
  prediction of whole preprocessed validation volumes, scored per case and averaged (segmentation:
  :func:`medfoundry.evaluation.dice_score` per case and class, as ``medfoundry evaluate``).

Under DDP each rank scores a share of the items and the scores are merged (every rank gets the same
result); under FSDP every rank runs every item, as the sharded forward pass needs all of them.
"""

from __future__ import annotations

import numpy as np
import torch

from medfoundry.data.augment_config import AugmentConfig
from medfoundry.data.loader import BatchSpec, make_batch
from medfoundry.data.sampler import PatchSampler
from medfoundry.inference.sliding_window import predict_sliding_window
from medfoundry.preprocessing.cache import load_case
from medfoundry.training import distributed as D
from medfoundry.training.setup import Training

_NO_AUGMENT = AugmentConfig(enabled=False)


@torch.no_grad()
def validate_patches(t: Training) -> dict[str, float]:
    """``{"val/<dataset>/<class>": ..., "val/<dataset>/mean": ..., "val/mean": ...}`` on patches."""
    metric = t.task.new_metric(pooled=True)
    model = _eval_model(t)
    for i, (sampler, spec, index) in enumerate(_patch_batches(t)):
        if i % _shards(t) == t.dist.rank % _shards(t):
            batch = make_batch(sampler, spec, index)
            with t.opts.autocast:
                outputs = model(batch["image"].to(t.opts.device))
            logits = outputs[0] if isinstance(outputs, list) else outputs
            t.task.update_metric(metric, logits.float().cpu(), batch)
    return _merged(t, metric)


@torch.no_grad()
def validate_volumes(t: Training) -> dict[str, float]:
    """The same keys, from whole validation volumes (sliding window on the preprocessed grid)."""
    metric = t.task.new_metric(pooled=False)
    model = _eval_model(t)
    num_fg = len(t.meta["labels"]) - 1
    for i, case in enumerate(t.val_cases):
        if i % _shards(t) != t.dist.rank % _shards(t):
            continue
        image, label, _ = load_case(t.pool_dir, case["id"])
        logits = predict_sliding_window(
            model, torch.from_numpy(np.array(image)), t.patch, amp=t.cfg.amp
        )
        valid = torch.zeros(1, num_fg, dtype=torch.bool)
        valid[0, [c - 1 for c in case["valid_labels"]]] = True
        batch = {"label": np.asarray(label)[None], "valid": valid, "case_ids": [case["id"]]}
        t.task.update_metric(metric, logits[None].cpu(), batch)
    return _merged(t, metric)


def _patch_batches(t: Training):
    """``(sampler, spec, index)`` of every validation batch: per dataset, ``validation.patches``
    patches from its validation cases, in batches of the training batch size (seeded, no augmentation,
    foreground oversampled as in training)."""
    n, size = t.cfg.validation.patches, t.batch_size
    seed = (1 << 40) + (t.cfg.seed << 16)  # apart from the training batches' seeds
    by_dataset: dict[str, list[dict]] = {}
    for case in t.val_cases:
        by_dataset.setdefault(case["dataset"], []).append(case)
    for d, (_, cases) in enumerate(sorted(by_dataset.items())):
        sampler = PatchSampler(str(t.pool_dir), cases, t.cfg.data.fg_fraction)
        for k in range(0, n, size):
            spec = BatchSpec(t.patch, min(size, n - k), t.num_fg, seed + d, _NO_AUGMENT)
            yield sampler, spec, k


def _eval_model(t: Training) -> torch.nn.Module:
    """The network in eval mode: FSDP's sharded module (every rank joins its gathers), else the plain
    one (a DDP wrapper would synchronise ranks on each forward)."""
    model = t.state.net if t.state.sharded else t.state.model
    return model.eval()


def _shards(t: Training) -> int:
    return 1 if t.state.sharded else t.dist.world


def _merged(t: Training, metric) -> dict[str, float]:
    """The metric over every rank's share (the same summary on every rank)."""
    if _shards(t) > 1:
        states = D.all_gather(metric.state, t.dist)
        metric.state = {}
        metric.merge(states)
    return metric.summary()
