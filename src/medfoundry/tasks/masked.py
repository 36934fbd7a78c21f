"""Masked-volume modelling, the self-supervised task (SimMIM's recipe on the 3D backbone): random 3D
blocks of the input are set to 0 (the mean of z-scored and CT-normalised intensities), and a 1x1x1
head on the full-resolution decoder features reconstructs the original intensities; the loss is the
mean absolute error over the masked voxels only, so the network must infer them from the rest.

Batches hold ``image`` ``(B, C, Z, Y, X)`` (masked), ``target`` (the same patch unmasked) and ``mask``
``(B, 1, Z, Y, X)`` bool (True: hidden). Labels are not used. The mask of batch ``k`` is a pure
function of the run's seed, ``k`` and the shard, so a resumed run masks exactly as it would have.
The validation metric is that masked error on fixed patches (``val/l1``); ``val/mean`` is its
negative, so the best checkpoint is the one that reconstructs best.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from medfoundry.data.loader import BatchSpec, batch_loader
from medfoundry.data.sampler import PatchSampler
from medfoundry.preprocessing.cache import load_case
from medfoundry.tasks.base import BatchSource, OutputSpec, Shard
from medfoundry.tasks.segmentation import fixed_patch_batches

MASK_RATIO = 0.6
"""Fraction of blocks hidden (SimMIM: 0.6)."""
BLOCKS_PER_AXIS = 8
"""The patch is cut into about this many blocks along each axis (a block is at least 1 voxel)."""
VALIDATION_SEED = 1 << 41


def block_mask(
    shape_zyx: tuple[int, ...], block_zyx: tuple[int, ...], ratio: float, gen: torch.Generator
) -> torch.Tensor:
    """A ``(Z, Y, X)`` bool mask hiding ``round(ratio * blocks)`` randomly chosen blocks of size
    ``block_zyx`` (the last blocks along an axis may be cut by the volume's edge)."""
    grid = [math.ceil(s / b) for s, b in zip(shape_zyx, block_zyx, strict=True)]
    n = math.prod(grid)
    hidden = torch.zeros(n, dtype=torch.bool)
    hidden[torch.randperm(n, generator=gen)[: round(ratio * n)]] = True
    mask = hidden.view(*grid)
    for axis, b in enumerate(block_zyx):
        mask = mask.repeat_interleave(b, dim=axis)
    return mask[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]


def block_size(patch_zyx: list[int]) -> tuple[int, ...]:
    """Blocks of about 1/8 of the patch along each axis."""
    return tuple(max(1, p // BLOCKS_PER_AXIS) for p in patch_zyx)


def masked_batch(batch: dict, seed: int, ratio: float = MASK_RATIO) -> dict:
    """``batch`` with ``image`` masked (one mask per sample, shared by its channels), ``target``
    (the unmasked image) and ``mask``; the masks are drawn from ``seed``."""
    image = batch["image"]  # (B, C, Z, Y, X)
    gen = torch.Generator().manual_seed(seed)
    block = block_size(list(image.shape[2:]))
    mask = torch.stack([block_mask(image.shape[2:], block, ratio, gen) for _ in image])[:, None]
    return {**batch, "image": image.masked_fill(mask, 0.0), "target": image, "mask": mask}


def masked_l1(outputs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of ``outputs`` against ``target`` (both ``(B, C, Z, Y, X)``) over the
    voxels ``mask`` ``(B, 1, Z, Y, X)`` hides."""
    m = mask.expand_as(target).float()
    return ((outputs - target).abs() * m).sum() / m.sum().clamp_min(1.0)


class MaskedErrorAccumulator:
    """Masked absolute error summed over batches (mergeable across processes)."""

    def __init__(self) -> None:
        self.state = {"abs_error": 0.0, "voxels": 0.0}

    def add(self, outputs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        m = mask.expand_as(target).float()
        self.state["abs_error"] += float(((outputs - target).abs() * m).sum())
        self.state["voxels"] += float(m.sum())

    def merge(self, states: list[dict]) -> None:
        for s in states:
            for k in self.state:
                self.state[k] += s[k]

    def summary(self) -> dict[str, float]:
        l1 = self.state["abs_error"] / max(self.state["voxels"], 1.0)
        return {"val/l1": round(l1, 6), "val/mean": round(-l1, 6)}


class MaskedVolumeTask:
    name = "masked"
    batch_keys = ("image", "target", "mask")
    metric_name = "negative masked-voxel L1"
    prompt_channels = 0

    def __init__(self, in_channels: int, num_fg: int, mask_ratio: float = MASK_RATIO) -> None:
        """``num_fg``: foreground classes of the pool's label space (the shared patch sampler's
        batches carry them; the loss does not use them)."""
        self.in_channels = in_channels
        self.num_fg = num_fg
        self.mask_ratio = mask_ratio
        self.outputs = OutputSpec("identity", tuple(f"image_{c}" for c in range(in_channels)))

    @classmethod
    def from_config(cls, cfg, labels: dict[str, int], in_channels: int = 1) -> MaskedVolumeTask:
        return cls(in_channels, len(labels) - 1)

    @classmethod
    def from_description(cls, d: dict, labels: dict[str, int], head: dict) -> MaskedVolumeTask:
        return cls(head["num_outputs"], len(labels) - 1, d.get("mask_ratio", MASK_RATIO))

    def describe(self) -> dict:
        return {"name": self.name, "outputs": self.outputs.to_json(), "mask_ratio": self.mask_ratio}

    def head(self) -> dict:
        return {"kind": "reconstruction", "num_outputs": self.in_channels}

    def train_batches(self, src: BatchSource, start_step: int, shard: Shard) -> Iterator[dict]:
        """The training patches of segmentation (same sampler and augmentation), masked: batch
        ``k``'s mask is drawn from ``(seed, k, rank)``."""
        sampler = PatchSampler(str(src.pool_dir), src.train_cases, src.fg_fraction)
        spec = BatchSpec(
            src.patch_size,
            src.batch_size,
            self.num_fg,
            src.seed,
            src.augment,
            src.one_dataset_per_batch,
        )
        for batch in batch_loader(sampler, spec, start_step, src.num_workers, *shard):
            seed = _mask_seed(src.seed, batch["index"], shard[0])
            yield masked_batch(batch, seed, self.mask_ratio)

    def validation_batches(self, src: BatchSource, shard: Shard = (0, 1)) -> Iterator[dict]:
        """``src.val_patches`` fixed patches per dataset (as segmentation's), with fixed masks."""
        for seed, batch in fixed_patch_batches(
            src, src.val_cases, self.num_fg, VALIDATION_SEED, shard
        ):
            yield masked_batch(batch, seed, self.mask_ratio)

    def validation_volumes(
        self, src: BatchSource, shard: Shard = (0, 1)
    ) -> Iterator[tuple[torch.Tensor, dict]]:
        """Each validation case (this process's share), masked with a fixed mask: ``(C, Z, Y, X)``
        and the batch of one that :meth:`update_metric` compares the reconstruction with."""
        for n, case in enumerate(src.val_cases[shard[0] :: shard[1]]):
            image, _, _ = load_case(src.pool_dir, case["id"])
            batch = {"image": torch.from_numpy(np.array(image))[None], "case_ids": [case["id"]]}
            batch = masked_batch(batch, VALIDATION_SEED + n * shard[1] + shard[0], self.mask_ratio)
            yield batch["image"][0], batch

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        return masked_l1(outputs.float(), batch["target"], batch["mask"])

    def new_metric(self, pooled: bool) -> MaskedErrorAccumulator:
        return MaskedErrorAccumulator()

    def update_metric(self, metric: MaskedErrorAccumulator, outputs, batch: dict) -> None:
        metric.add(outputs.float(), batch["target"], batch["mask"])


def _mask_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
