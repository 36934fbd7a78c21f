"""Batches in background workers, reproducible: batch ``k`` is a pure function of ``(seed, k)``.

So a resumed run (which starts at ``k = step``) sees exactly the batches the uninterrupted run saw,
whatever the number of workers, and DDP rank ``r`` of ``R`` takes batches ``k * R + r``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medfoundry.data.augment import apply_params
from medfoundry.data.augment_config import AugmentConfig, is_flat, sample_params, spatial_region
from medfoundry.data.sampler import PatchSampler


@dataclass
class BatchSpec:
    patch_size: list[int]
    batch_size: int
    num_classes: int
    """Foreground classes K of the label space (global ids 1..K)."""
    seed: int
    augment: AugmentConfig
    one_dataset_per_batch: bool = False
    """Fill each batch from one dataset of the pool (see :class:`DataConfig`)."""


def make_batch(sampler: PatchSampler, spec: BatchSpec, index: int) -> dict:
    """Batch number ``index``: ``{image (B, C, Z, Y, X) float32, label (B, Z, Y, X) int64,
    valid (B, K) bool over global classes 1..K, case_ids, params (recorded augmentation)}``."""
    rng = np.random.default_rng([spec.seed, index])
    region = spatial_region(spec.augment, spec.patch_size)
    flat = is_flat(spec.augment, spec.patch_size)
    dataset = sampler.draw_dataset(rng) if spec.one_dataset_per_batch else None
    images, labels, valid, ids, params = [], [], [], [], []
    for _ in range(spec.batch_size):
        p = sample_params(spec.augment, rng, flat)
        s = sampler.sample(
            rng, region if ("rotation_rad" in p or "scale" in p) else spec.patch_size, dataset
        )
        img, lab = apply_params(
            p,
            torch.from_numpy(s["image"]),
            torch.from_numpy(s["label"].astype(np.int64)),
            spec.patch_size,
        )
        images.append(img)
        labels.append(lab)
        v = torch.zeros(spec.num_classes, dtype=torch.bool)
        v[[c - 1 for c in s["valid_labels"]]] = True
        valid.append(v)
        ids.append(s["case_id"])
        params.append({**p, "center": s["center"]})
    return {
        "image": torch.stack(images),
        "label": torch.stack(labels),
        "valid": torch.stack(valid),
        "case_ids": ids,
        "params": params,
        "index": index,
    }


class BatchStream(IterableDataset):
    """Endless batches ``start, start + stride, ...``; workers split them round-robin, in order."""

    def __init__(
        self, sampler: PatchSampler, spec: BatchSpec, start: int, stride: int = 1, offset: int = 0
    ) -> None:
        self.sampler, self.spec, self.start, self.stride, self.offset = (
            sampler,
            spec,
            start,
            stride,
            offset,
        )

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        k = self.start + wid
        while True:
            yield make_batch(self.sampler, self.spec, k * self.stride + self.offset)
            k += nw


def batch_loader(
    sampler: PatchSampler,
    spec: BatchSpec,
    start_step: int,
    workers: int,
    rank: int = 0,
    world: int = 1,
):
    """An iterator of batches for steps ``start_step, start_step + 1, ...`` (this rank's share)."""
    stream = BatchStream(sampler, spec, start_step, stride=world, offset=rank)
    if workers <= 0:
        return iter(stream)
    return iter(
        DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            prefetch_factor=4,
            persistent_workers=False,
            multiprocessing_context="fork",
        )
    )
