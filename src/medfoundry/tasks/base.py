"""The task seam: what a capability adds to the TSFM backbone, and the one description of its outputs.

A task is a small object with:

- ``name``: its key in :data:`medfoundry.tasks.TASKS` (and in ``--set task=...``);
- ``batch_keys``: the tensors of a training batch the step moves to the device (``image``
  ``(B, C, Z, Y, X)`` float32 first; batches also carry ``case_ids``);
- ``train_batches(source, start_step, shard)``: its training batches, made from a
  :class:`BatchSource` (batch ``k`` a pure function of the seed and ``k``, so resume is exact), and
  ``validation_batches(source, shard)`` / ``validation_volumes(source, shard)``: the fixed validation
  patches and the whole validation volumes with what its metric compares them to;
- ``prompt_channels``: input channels it adds after the image's (the network reads
  ``image channels + prompt_channels``; 0 for all but promptable segmentation);
- ``outputs``: an :class:`OutputSpec` (activation, output channel -> class name), stored in every
  checkpoint and model file, and the only thing decoding reads;
- ``head()``: the head it puts on the backbone, as a description
  (:func:`medfoundry.models.heads.build_head`);
- ``loss(outputs, batch)``: a scalar tensor from the network's outputs and a batch;
- ``decode(...)``: outputs -> probabilities and predictions (one rule for validation, ``Predictor``,
  export and serving);
- ``new_metric(pooled)`` and ``update_metric(metric, outputs, batch)``: its validation metric, an
  accumulator whose ``summary()`` holds ``val/mean`` (the number the best checkpoint follows);
- ``describe()``: the JSON a checkpoint stores to rebuild the task (``from_description``);
- optionally ``interact(batch, net)``: called by the training step (no gradient, the step's
  autocast) before the forward pass, for batches that depend on the network's own answers
  (promptable segmentation's clicks at the model's errors); returns the batch to train on.

The training loop, validation, the run folder and the checkpoint code know nothing else about a
task: they call these, and store ``describe()`` and ``outputs`` in checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from medfoundry.data.augment_config import AugmentConfig


@dataclass(frozen=True)
class OutputSpec:
    """What each output channel of a model means."""

    activation: Literal["sigmoid", "softmax", "identity"]
    """``sigmoid``: independent per-channel probabilities (partial labels: channel k is class k);
    ``softmax``: one distribution over the channels, ``background`` first; ``identity``: values
    (image intensities, e.g. a reconstruction), not classes."""
    channels: tuple[str, ...]
    """The class name of each output channel, in order."""

    def to_json(self) -> dict:
        return {"activation": self.activation, "channels": list(self.channels)}

    @classmethod
    def from_json(cls, d: dict) -> OutputSpec:
        return cls(d["activation"], tuple(d["channels"]))


@dataclass
class BatchSource:
    """Where a run's batches come from: a preprocessed pool, the run's split, patch and batch size."""

    pool_dir: Path
    train_cases: list[dict]
    """pool.json records of the training cases."""
    val_cases: list[dict]
    """pool.json records of the validation cases used."""
    patch_size: list[int]
    """(Z, Y, X) voxels."""
    batch_size: int
    seed: int
    augment: AugmentConfig
    fg_fraction: float = 0.33
    one_dataset_per_batch: bool = True
    num_workers: int = 2
    val_patches: int = 20
    """Validation patches per dataset."""


Shard = tuple[int, int]
"""``(rank, world)``: a process takes items ``rank, rank + world, ...`` of a sequence."""


class Task(Protocol):
    name: str
    batch_keys: tuple[str, ...]
    outputs: OutputSpec
    prompt_channels: int
    """Input channels after the image's that carry prompts (0: the network reads the image only)."""

    def describe(self) -> dict: ...

    def head(self) -> dict: ...

    def train_batches(
        self, source: BatchSource, start_step: int, shard: Shard
    ) -> Iterator[dict]: ...

    def validation_batches(self, source: BatchSource, shard: Shard) -> Iterator[dict]: ...

    def validation_volumes(
        self, source: BatchSource, shard: Shard
    ) -> Iterator[tuple[torch.Tensor, dict]]: ...

    def loss(self, outputs: Any, batch: dict) -> torch.Tensor: ...

    def decode(self, outputs: torch.Tensor, classes: list[str]) -> Any: ...

    def new_metric(self, pooled: bool) -> Any: ...

    def update_metric(self, metric: Any, outputs: Any, batch: dict) -> None: ...
