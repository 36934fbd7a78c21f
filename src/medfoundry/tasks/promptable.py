"""Promptable segmentation: one network that segments its classes automatically (no prompt) and any
object a user points at with clicks, a box and the previous mask (class-agnostic).

Network: the TSFM backbone reading the image channels followed by the four prompt maps of
:data:`medfoundry.data.prompts.PROMPT_CHANNELS` (zeros: automatic mode), and a per-voxel sigmoid
head with one channel per foreground class of the label space (as a partial-label segmentation
model, so decoding and ``medfoundry predict`` read it by class name) plus :data:`PROMPTED`, the
object the prompts point at.

Training batches are segmentation's patches (same sampler, augmentation and partial labels) with a
simulated interaction per sample (:func:`~medfoundry.data.prompts.simulate_prompts`) on one object:
a labelled class present in the patch, sometimes the union of two (so the prompted channel learns
objects, not class names). Batch keys: ``image`` ``(B, C + 4, Z, Y, X)``, ``label``, ``valid`` (as
segmentation), ``object`` ``(B, Z, Y, X)`` float32 (the prompted object; zeros when no prompt),
``prompted`` ``(B,)`` bool, ``prompts`` (each sample's record) and ``prompt_states``. The prompts of
batch ``k`` are a pure function of the run's seed, ``k`` and the shard; in 60% of the batches the
training step then lets the simulated user go on with 1-3 clicks at the network's own errors
(:meth:`PromptableTask.interact`, no gradient), which follow the weights a resume restores.

Loss: the partial-label loss on the class channels (every sample) plus BCE + Dice of the prompted
channel on the prompted samples. Validation on patches: Dice of the prompted channel after one
click at the centre of an object (``val/<dataset>/<class>@1click``; the best checkpoint follows it);
on whole volumes: the automatic mode's Dice, as segmentation's.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry import MedfoundryError
from medfoundry.data.prompts import (
    PROMPT_CHANNELS,
    Prompts,
    encode_prompts,
    interior_point,
    next_click,
    simulate_prompts,
)
from medfoundry.evaluation import DiceAccumulator
from medfoundry.losses import partial_label_loss
from medfoundry.tasks.base import BatchSource, OutputSpec, Shard
from medfoundry.tasks.segmentation import SegmentationTask

PROMPTED = "prompted object"
"""The name of the output channel that answers the prompts."""
MIN_OBJECT_VOXELS = 8
"""A class with fewer voxels in a patch is not offered as the prompted object there."""
UNION_PROBABILITY = 0.15
SMOOTH = 1e-5
INTERACT_PROBABILITY = 0.6
"""Share of training batches whose prompts continue with clicks at the network's own errors."""
MAX_MODEL_CLICKS = 3
PROMPT_STREAM = 7
"""Part of each batch's prompt seed, apart from the augmentation's ``(seed, index)`` stream."""


def choose_object(
    label: np.ndarray, classes: list[int], rng: np.random.Generator
) -> tuple[np.ndarray | None, list[int]]:
    """The prompted object of one sample: ``label`` ``(Z, Y, X)`` global ids, ``classes`` the ids
    its dataset annotates. Returns the ``(Z, Y, X)`` bool mask and its class ids, or ``(None, [])``
    when no annotated class is in the patch."""
    present = clickable_classes(label, classes)
    if not present:
        return None, []
    picked = [present[rng.integers(len(present))]]
    if len(present) > 1 and rng.random() < UNION_PROBABILITY:
        picked.append(rng.choice([c for c in present if c != picked[0]]))
    return np.isin(label, picked), [int(c) for c in picked]


def clickable_classes(label: np.ndarray, classes: list[int]) -> list[int]:
    """The ids of ``classes`` with at least :data:`MIN_OBJECT_VOXELS` voxels in ``label``."""
    return [c for c in classes if np.count_nonzero(label == c) >= MIN_OBJECT_VOXELS]


def with_prompts(batch: dict, prompts: list[Prompts], objects: list[np.ndarray]) -> dict:
    """``batch`` with each sample's prompt maps after its image channels (``image``
    ``(B, C + 4, Z, Y, X)``), its prompted ``object`` (float32) and ``prompted`` (bool)."""
    shape = batch["label"].shape[1:]
    maps = np.stack([encode_prompts(p, shape) for p in prompts])
    return {
        **batch,
        "image": torch.cat([batch["image"], torch.from_numpy(maps)], dim=1),
        "object": torch.from_numpy(np.stack(objects).astype(np.float32)),
        "prompted": torch.tensor([not p.empty for p in prompts], dtype=torch.bool),
    }


def prompt_batch(batch: dict, seed: int | list[int]) -> dict:
    """``batch`` (segmentation's) with a simulated interaction per sample, drawn from ``seed`` (a
    ``numpy`` seed: an int or a list of ints)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(batch["label"])
    objects, records, states = [], [], []
    for b in range(len(labels)):
        classes = [int(k) + 1 for k in torch.nonzero(batch["valid"][b])[:, 0]]
        mask, ids = choose_object(labels[b], classes, rng)
        prompts = simulate_prompts(mask, rng) if mask is not None else None
        prompts = prompts or Prompts()
        objects.append(mask if mask is not None and not prompts.empty else np.zeros_like(labels[b]))
        records.append({**prompts.record(), "classes": ids if not prompts.empty else []})
        states.append(prompts)
    return {
        **with_prompts(batch, states, objects),
        "prompts": records,
        "prompt_states": states,
        "interaction_seed": [*np.atleast_1d(seed).tolist(), 1],
    }


def add_model_clicks(batch: dict, shown: np.ndarray, rng: np.random.Generator) -> dict:
    """One round of the simulated user on the network's own answers ``shown`` ``(B, Z, Y, X)`` bool
    (its prompted channel): each prompted sample gets a click at the centre of its largest error,
    and that answer becomes its previous mask; the prompt maps of ``image`` are redrawn."""
    objects = batch["object"].cpu().numpy() > 0
    states, image = batch["prompt_states"], batch["image"].clone()
    c = image.shape[1] - len(PROMPT_CHANNELS)
    for b in np.flatnonzero(batch["prompted"].cpu().numpy()):
        click = next_click(shown[b], objects[b], rng)
        if click is None:
            continue
        states[b].points.append(click)
        states[b].previous = shown[b]
        maps = torch.from_numpy(encode_prompts(states[b], shown.shape[1:]))
        image[b, c:] = maps.to(image.device, image.dtype)
        batch["prompts"][b] = {**states[b].record(), "classes": batch["prompts"][b]["classes"]}
    return {**batch, "image": image}


def one_click_batch(batch: dict, names: dict[int, str], turn: int) -> dict:
    """A validation batch: each sample prompted with one click at the centre of one annotated class
    present in it (chosen in turn by ``turn + sample``), no previous mask."""
    labels = np.asarray(batch["label"])
    all_prompts, objects, which = [], [], []
    for b in range(len(labels)):
        classes = [int(k) + 1 for k in torch.nonzero(batch["valid"][b])[:, 0]]
        present = clickable_classes(labels[b], classes)
        prompts, mask = Prompts(), np.zeros(labels.shape[1:], dtype=bool)
        if present:
            c = present[(turn + b) % len(present)]
            mask = labels[b] == c
            prompts.points.append((*interior_point(mask), True))
        all_prompts.append(prompts)
        objects.append(mask)
        which.append(names[c] if present else None)
    return {**with_prompts(batch, all_prompts, objects), "object_names": which}


def object_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + (1 - Dice) of ``logits`` ``(N, Z, Y, X)`` against ``target`` ``(N, Z, Y, X)`` in
    {0, 1}: the voxel-mean BCE and the per-sample soft Dice, averaged over the N samples."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    dice = (2 * (p * t).sum(1) + SMOOTH) / (p.sum(1) + t.sum(1) + SMOOTH)
    return bce + (1 - dice).mean()


class PromptableTask:
    name = "promptable"
    batch_keys = ("image", "label", "valid", "object", "prompted")
    metric_name = "mean Dice after one click"
    prompt_channels = len(PROMPT_CHANNELS)

    def __init__(self, labels: dict[str, int], channels: tuple[str, ...] | None = None) -> None:
        class_channels = tuple(c for c in channels if c != PROMPTED) if channels else None
        self.seg = SegmentationTask(labels, "sigmoid", False, class_channels)
        self.num_classes = len(self.seg.outputs.channels)
        self.outputs = OutputSpec("sigmoid", (*self.seg.outputs.channels, PROMPTED))

    @classmethod
    def from_config(cls, cfg, labels: dict[str, int], in_channels: int = 1) -> PromptableTask:
        if cfg.loss != "partial" or cfg.deep_supervision:
            raise MedfoundryError(
                "task=promptable trains with loss=partial and deep_supervision=false"
            )
        if len(labels) < 2:
            raise MedfoundryError("task=promptable needs a labelled dataset to simulate clicks on")
        return cls(labels)

    @classmethod
    def from_description(cls, d: dict, labels: dict[str, int], head: dict) -> PromptableTask:
        return cls(labels, tuple(OutputSpec.from_json(d["outputs"]).channels))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "outputs": self.outputs.to_json(),
            "prompt_channels": list(PROMPT_CHANNELS),
        }

    def head(self) -> dict:
        return {
            "kind": "segmentation",
            "num_outputs": self.num_classes + 1,
            "deep_supervision": False,
        }

    def train_batches(self, src: BatchSource, start_step: int, shard: Shard) -> Iterator[dict]:
        """Segmentation's training batches, each with its simulated interactions."""
        for batch in self.seg.train_batches(src, start_step, shard):
            batch = prompt_batch(batch, [src.seed, batch["index"], shard[0], PROMPT_STREAM])
            # The rounds of clicks at the network's errors are drawn per step, not per rank: under
            # FSDP every rank must run the same number of forward passes.
            step = np.random.default_rng([src.seed, batch["index"] // shard[1], PROMPT_STREAM + 1])
            rounds = int(step.integers(1, MAX_MODEL_CLICKS + 1))
            batch["interaction_rounds"] = rounds if step.random() < INTERACT_PROBABILITY else 0
            yield batch

    def validation_batches(self, src: BatchSource, shard: Shard = (0, 1)) -> Iterator[dict]:
        for turn, batch in enumerate(self.seg.validation_batches(src, shard)):
            yield one_click_batch(batch, self.seg.names, turn)

    def validation_volumes(self, src: BatchSource, shard: Shard = (0, 1)):
        """Segmentation's whole volumes with empty prompt maps (the automatic mode)."""
        for image, batch in self.seg.validation_volumes(src, shard):
            yield with_empty_prompts(image), batch

    def interact(self, batch: dict, net) -> dict:
        """Iterative training (as RITM, SAM and nnInteractive): in a share of the batches the
        simulated user goes on for 1-3 rounds on the network's own answers (no gradient), each a
        click at its largest error with that answer as the previous mask, so the step trains
        corrections of the model's real mistakes, not only of synthetic ones. The rounds
        (``interaction_rounds``, drawn per step by :meth:`train_batches`) and the clicks follow the
        batch's seeds and the weights, which a resume restores."""
        rng = np.random.default_rng(batch.get("interaction_seed", 0))
        for _ in range(batch.get("interaction_rounds", 0)):  # the same count on every rank
            outputs = net(batch["image"])
            shown = (outputs[:, self.num_classes] > 0).cpu().numpy()
            batch = add_model_clicks(batch, shown, rng)
        return batch

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        """Partial-label loss on the class channels of ``outputs`` ``(B, K + 1, Z, Y, X)``, plus the
        prompted channel's loss on the prompted samples."""
        outputs = outputs.float()
        total = partial_label_loss(outputs[:, : self.num_classes], batch["label"], batch["valid"])
        on = batch["prompted"]
        if on.any():
            total = total + object_loss(outputs[on, self.num_classes], batch["object"][on])
        return total

    def decode(self, logits: torch.Tensor, classes: list[str]):
        """The automatic mode's decision rule over ``classes`` (segmentation's)."""
        return self.seg.decode(logits, classes)

    def new_metric(self, pooled: bool) -> DiceAccumulator:
        return DiceAccumulator(pooled)

    def update_metric(self, metric: DiceAccumulator, logits: torch.Tensor, batch: dict) -> None:
        """Prompted batches: Dice of the prompted channel (> 0) per dataset and object class;
        whole volumes (no ``object``): the class channels', as segmentation's."""
        if "object" not in batch:
            self.seg.update_metric(metric, logits, batch)
            return
        pred = (logits[:, self.num_classes] > 0).numpy()
        for b, case_id in enumerate(batch["case_ids"]):
            if batch["object_names"][b] is not None:
                group = case_id.split("/", 1)[0]
                name = f"{batch['object_names'][b]}@1click"
                metric.add(group, name, pred[b], batch["object"][b].numpy() > 0)


def with_empty_prompts(image: torch.Tensor) -> torch.Tensor:
    """``image`` ``(C, Z, Y, X)`` followed by zero prompt maps: ``(C + 4, Z, Y, X)``."""
    return torch.cat([image, image.new_zeros((len(PROMPT_CHANNELS), *image.shape[1:]))])
