"""Validation during and at the end of training, with the task's own batches, decoding and metric.

- :func:`validate_patches` (``validation.mode: patch``, the default during training): the task's
  fixed validation patches (segmentation: ``validation.patches`` per dataset, drawn like training
  patches without augmentation, the same set every time), scored with its metric pooled over all of
  them (segmentation: nnU-Net's pseudo Dice). Its cost is ``patches x patch size``, whatever the size
  of the volumes.
- :func:`validate_volumes` (``mode: full``, and ``validation.final`` at the end): sliding-window
  prediction of whole preprocessed validation volumes, scored per case and averaged (segmentation:
  :func:`medfoundry.evaluation.dice_score` per case and class, as ``medfoundry evaluate``).

Under DDP each rank scores a share of the items and the scores are merged (every rank gets the same
result); under FSDP every rank runs every item, as the sharded forward pass needs all of them.
"""

from __future__ import annotations

import torch

from medfoundry.inference.sliding_window import predict_sliding_window
from medfoundry.training import distributed as D
from medfoundry.training.setup import Training


@torch.no_grad()
def validate_patches(t: Training) -> dict[str, float]:
    """The task metric's summary (segmentation: ``val/<dataset>/<class>``, ``val/<dataset>/mean``,
    ``val/mean``) on the validation patches."""
    metric = t.task.new_metric(pooled=True)
    model = _eval_model(t)
    for batch in t.task.validation_batches(t.source, _shard(t)):
        with t.opts.autocast:
            outputs = model(batch["image"].to(t.opts.device))
        logits = outputs[0] if isinstance(outputs, list) else outputs  # full resolution
        t.task.update_metric(metric, logits.float().cpu(), batch)
    return _merged(t, metric)


@torch.no_grad()
def validate_volumes(t: Training) -> dict[str, float]:
    """The same summary, from whole validation volumes (sliding window on the preprocessed grid)."""
    metric = t.task.new_metric(pooled=False)
    model = _eval_model(t)
    for image, target in t.task.validation_volumes(t.source, _shard(t)):
        logits = predict_sliding_window(model, image, t.source.patch_size, amp=t.amp)
        t.task.update_metric(metric, logits[None].cpu(), target)
    return _merged(t, metric)


def _eval_model(t: Training) -> torch.nn.Module:
    """The network in eval mode: FSDP's sharded module (every rank joins its gathers), else the plain
    one (a DDP wrapper would synchronise ranks on each forward)."""
    model = t.state.net if t.state.sharded else t.state.model
    return model.eval()


def _shard(t: Training) -> tuple[int, int]:
    return (0, 1) if t.state.sharded else (t.dist.rank, t.dist.world)


def _merged(t: Training, metric) -> dict[str, float]:
    """The metric over every rank's share (the same summary on every rank)."""
    if _shard(t)[1] > 1:
        states = D.all_gather(metric.state, t.dist)
        metric.state = {}
        metric.merge(states)
    return metric.summary()
