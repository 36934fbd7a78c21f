"""Semantic segmentation: a per-voxel head, the partial-label (sigmoid) or softmax loss, one decoding
rule, and validation Dice per dataset and class.

Label space: ``labels`` maps class names to global ids, background 0. Output channels
(:func:`channel_names`): sigmoid models have one channel per foreground class in id order (channel
``k - 1`` is class ``k``); softmax models have ``background`` first. Batches hold ``label``
``(B, Z, Y, X)`` int64 global ids and ``valid`` ``(B, K)`` bool, where ``valid[b, k - 1]`` says the
sample's dataset annotates class ``k``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry import MedfoundryError
from medfoundry.data.augment_config import AugmentConfig
from medfoundry.data.loader import BatchSpec, batch_loader, make_batch
from medfoundry.data.sampler import PatchSampler
from medfoundry.evaluation import DiceAccumulator
from medfoundry.losses import partial_label_loss, softmax_ce_dice_loss
from medfoundry.preprocessing.cache import load_case
from medfoundry.tasks.base import BatchSource, OutputSpec, Shard

ACTIVATION_OF_LOSS = {"partial": "sigmoid", "softmax": "softmax"}
"""The one place that says which output activation a training loss implies."""
LOSS_OF_ACTIVATION = {"sigmoid": partial_label_loss, "softmax": softmax_ce_dice_loss}


def channel_names(labels: dict[str, int], activation: str) -> tuple[str, ...]:
    """Class name of each output channel: sigmoid ``(id 1, id 2, ...)``; softmax
    ``("background", id 1, ...)``."""
    by_id = tuple(n for n, i in sorted(labels.items(), key=lambda kv: kv[1]) if i != 0)
    return by_id if activation == "sigmoid" else ("background", *by_id)


_NO_AUGMENT = AugmentConfig(enabled=False)


def fixed_patch_batches(
    src: BatchSource, cases: list[dict], num_fg: int, seed_base: int, shard: Shard
) -> Iterator[tuple[int, dict]]:
    """Per dataset of ``cases``, ``src.val_patches`` patches in batches of the training batch size,
    drawn as training patches without augmentation from a fixed seed (the same every time); yields
    ``(seed, batch)`` for this process's share, ``seed`` unique to the batch."""
    by_dataset: dict[str, list[dict]] = {}
    for case in cases:
        by_dataset.setdefault(case["dataset"], []).append(case)
    i = 0
    for d, (_, group) in enumerate(sorted(by_dataset.items())):
        sampler = PatchSampler(str(src.pool_dir), group, src.fg_fraction)
        seed = seed_base + (src.seed << 16) + d
        for k in range(0, src.val_patches, src.batch_size):
            if i % shard[1] == shard[0]:
                size = min(src.batch_size, src.val_patches - k)
                spec = BatchSpec(src.patch_size, size, num_fg, seed, _NO_AUGMENT)
                yield seed + k, make_batch(sampler, spec, k)
            i += 1


def labelled(cases: list[dict], required: bool = True) -> list[dict]:
    """The cases whose dataset annotates some class (image-only cases are for self-supervision)."""
    out = [c for c in cases if c["valid_labels"]]
    if required and not out:
        raise MedfoundryError("no labelled training case: train self-supervised (--objective ssl)")
    return out


VALIDATION_SEED = 1 << 40
"""Added to the run's seed (shifted) for the validation patches, apart from the training batches'."""


class SegmentationTask:
    name = "segmentation"
    batch_keys = ("image", "label", "valid")
    metric_name = "mean Dice"
    prompt_channels = 0

    def __init__(
        self,
        labels: dict[str, int],
        activation: str,
        deep_supervision: bool = False,
        channels: tuple[str, ...] | None = None,
    ) -> None:
        """``channels``: the stored output description's channel names (default: :func:`channel_names`);
        every class of ``labels`` must have one."""
        self.labels = dict(labels)
        self.names = {i: n for n, i in self.labels.items()}
        self.outputs = OutputSpec(activation, channels or channel_names(self.labels, activation))
        missing = set(channel_names(self.labels, activation)) - set(self.outputs.channels)
        if missing:
            raise MedfoundryError(f"the model's outputs name no channel for {sorted(missing)}")
        self.deep_supervision = deep_supervision
        self._loss = LOSS_OF_ACTIVATION[activation]

    @property
    def num_fg(self) -> int:
        """Foreground classes K of the label space (global ids 1..K)."""
        return len(self.labels) - 1

    @classmethod
    def from_config(cls, cfg, labels: dict[str, int], in_channels: int = 1) -> SegmentationTask:
        """For training with :class:`~medfoundry.training.config.TrainConfig` ``cfg``."""
        if len(labels) < 2:
            raise MedfoundryError(
                "the pool has no labelled dataset: train it self-supervised (--objective ssl)"
            )
        return cls(labels, ACTIVATION_OF_LOSS[cfg.loss], cfg.deep_supervision)

    @classmethod
    def from_description(cls, d: dict, labels: dict[str, int], head: dict) -> SegmentationTask:
        outputs = OutputSpec.from_json(d["outputs"])
        if len(outputs.channels) != head["num_outputs"]:
            raise MedfoundryError(
                f"the model's outputs name {len(outputs.channels)} channels for a head of "
                f"{head['num_outputs']}"
            )
        return cls(labels, outputs.activation, head["deep_supervision"], outputs.channels)

    def describe(self) -> dict:
        return {"name": self.name, "outputs": self.outputs.to_json()}

    def head(self) -> dict:
        return {
            "kind": "segmentation",
            "num_outputs": len(self.outputs.channels),
            "deep_supervision": self.deep_supervision,
        }

    def train_batches(self, src: BatchSource, start_step: int, shard: Shard) -> Iterator[dict]:
        """Augmented patches of the training cases drawn with the pool's probabilities: ``image``
        ``(B, C, Z, Y, X)``, ``label``, ``valid``, ``case_ids`` (see :func:`make_batch`); this
        process's share (``shard``) of batches ``start_step, start_step + 1, ...``."""
        sampler = PatchSampler(str(src.pool_dir), labelled(src.train_cases), src.fg_fraction)
        spec = BatchSpec(
            patch_size=src.patch_size,
            batch_size=src.batch_size,
            num_classes=self.num_fg,
            seed=src.seed,
            augment=src.augment,
            one_dataset_per_batch=src.one_dataset_per_batch,
        )
        return batch_loader(sampler, spec, start_step, src.num_workers, *shard)

    def validation_batches(self, src: BatchSource, shard: Shard = (0, 1)) -> Iterator[dict]:
        """Per dataset, ``src.val_patches`` patches of its validation cases in batches of the
        training batch size: drawn as training patches (foreground oversampled) without
        augmentation, from a fixed seed, so every validation scores the same patches."""
        cases = labelled(src.val_cases, required=False)
        for _, batch in fixed_patch_batches(src, cases, self.num_fg, VALIDATION_SEED, shard):
            yield batch

    def validation_volumes(
        self, src: BatchSource, shard: Shard = (0, 1)
    ) -> Iterator[tuple[torch.Tensor, dict]]:
        """Each validation case (this process's share): its preprocessed image ``(C, Z, Y, X)`` and
        the batch of one that :meth:`update_metric` compares the logits with."""
        for case in labelled(src.val_cases, required=False)[shard[0] :: shard[1]]:
            image, label, _ = load_case(src.pool_dir, case["id"])
            valid = torch.zeros(1, self.num_fg, dtype=torch.bool)
            valid[0, [c - 1 for c in case["valid_labels"]]] = True
            batch = {"label": np.asarray(label)[None], "valid": valid, "case_ids": [case["id"]]}
            yield torch.from_numpy(np.array(image)), batch

    def loss(self, outputs, batch: dict) -> torch.Tensor:
        """The loss of ``outputs`` ``(B, K, Z, Y, X)`` logits (or, with deep supervision, a list from
        full resolution down: each against nearest-downsampled labels, weighted 1/2^i)."""
        label, valid = batch["label"], batch["valid"]
        if not isinstance(outputs, list):
            return self._loss(outputs.float(), label, valid)
        weights = [0.5**i for i in range(len(outputs))]
        total = 0.0
        for w, o in zip(weights, outputs, strict=True):
            lab = label
            if o.shape[2:] != label.shape[1:]:
                small = F.interpolate(label[:, None].float(), size=o.shape[2:], mode="nearest")
                lab = small[:, 0].long()
            total = total + w * self._loss(o.float(), lab, valid)
        return total / sum(weights)

    def decode(self, logits: torch.Tensor, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The decision rule, for logits ``(K, Z, Y, X)`` restricted to the named ``classes``.

        Returns ``probabilities`` ``(1 + n, Z, Y, X)`` (background, then ``classes`` in order) and the
        ``index`` ``(Z, Y, X)`` int64 of the winner (0: background, i: ``classes[i - 1]``). Sigmoid:
        each class's probability is its channel's sigmoid and background is ``1 - max`` of them, so a
        class wins where it is the most probable and above 0.5. Softmax: a softmax over background
        and the classes' channels (the other classes' channels are left out).
        """
        channel = {n: i for i, n in enumerate(self.outputs.channels)}
        if self.outputs.activation == "sigmoid":
            p = torch.sigmoid(logits[[channel[n] for n in classes]].float())
            bg = 1 - p.max(0).values if classes else torch.ones_like(logits[0], dtype=p.dtype)
            probs = torch.cat([bg[None], p])
        else:
            probs = torch.softmax(logits[[0, *(channel[n] for n in classes)]].float(), 0)
        return probs, probs.argmax(0)

    def decode_ids(self, logits: torch.Tensor, class_ids: list[int]) -> np.ndarray:
        """``(Z, Y, X)`` global-id label map (uint8/uint16) of :meth:`decode` over ``class_ids``."""
        _, index = self.decode(logits, [self.names[c] for c in class_ids])
        lut = np.array(
            [0, *class_ids], dtype=np.uint8 if max(class_ids, default=0) < 256 else np.uint16
        )
        return lut[index.cpu().numpy()]

    def new_metric(self, pooled: bool) -> DiceAccumulator:
        return DiceAccumulator(pooled)

    def update_metric(self, metric: DiceAccumulator, logits: torch.Tensor, batch: dict) -> None:
        """Score each sample of ``logits`` ``(B, K, Z, Y, X)`` against ``batch["label"]`` on the
        classes its dataset annotates; the group is the dataset (``case_ids`` are ``dataset/case``)."""
        for b, case_id in enumerate(batch["case_ids"]):
            classes = [int(k) + 1 for k in torch.nonzero(batch["valid"][b])[:, 0]]
            pred = self.decode_ids(logits[b], classes)
            ref = np.asarray(batch["label"][b])
            for c in classes:
                metric.add(case_id.split("/", 1)[0], self.names[c], pred == c, ref == c)
