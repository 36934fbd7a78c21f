"""The task seam: what a capability adds to the TSFM backbone, and the one description of its outputs.

A task is a small object with:

- ``name``: its key in :data:`medfoundry.tasks.TASKS` (and in ``--set task=...``);
- ``batch_keys``: what a training batch must hold (every batch also has ``image`` ``(B, C, Z, Y, X)``
  float32 and ``case_ids``);
- ``outputs``: an :class:`OutputSpec` (activation, output channel -> class name), stored in every
  checkpoint and model file, and the only thing decoding reads;
- ``head()``: the head it puts on the backbone, as a description
  (:func:`medfoundry.models.heads.build_head`);
- ``loss(outputs, batch)``: a scalar tensor from the network's outputs and a batch;
- ``decode(...)``: outputs -> probabilities and predictions (one rule for validation, ``Predictor``,
  export and serving);
- ``new_metric(pooled)`` and ``update_metric(metric, outputs, batch)``: its validation metric, an
  accumulator whose ``summary()`` holds ``val/mean`` (the number the best checkpoint follows);
- ``describe()``: the JSON a checkpoint stores to rebuild the task (``from_description``).

The training loop, the run folder and the checkpoint code know nothing else about a task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch


@dataclass(frozen=True)
class OutputSpec:
    """What each output channel of a model means."""

    activation: Literal["sigmoid", "softmax"]
    """``sigmoid``: independent per-channel probabilities (partial labels: channel k is class k);
    ``softmax``: one distribution over the channels, ``background`` first."""
    channels: tuple[str, ...]
    """The class name of each output channel, in order."""

    def to_json(self) -> dict:
        return {"activation": self.activation, "channels": list(self.channels)}

    @classmethod
    def from_json(cls, d: dict) -> OutputSpec:
        return cls(d["activation"], tuple(d["channels"]))


class Task(Protocol):
    name: str
    batch_keys: tuple[str, ...]
    outputs: OutputSpec

    def describe(self) -> dict: ...

    def head(self) -> dict: ...

    def loss(self, outputs: Any, batch: dict) -> torch.Tensor: ...

    def decode(self, outputs: torch.Tensor, classes: list[str]) -> Any: ...

    def new_metric(self, pooled: bool) -> Any: ...

    def update_metric(self, metric: Any, outputs: Any, batch: dict) -> None: ...
