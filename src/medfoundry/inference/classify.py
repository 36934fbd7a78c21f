"""A trained classifier: load it from a model file, run folder or checkpoint, and turn images into
class probabilities and calls with the decision thresholds stored in it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfoundry import MedfoundryError
from medfoundry.data.classification import normalize
from medfoundry.models.registry import create_model_from_description
from medfoundry.runs.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from medfoundry.tasks import ClassificationTask, task_from_description

MODEL_FILE = "model.safetensors"
"""The classifier a run folder hands on: its best checkpoint with the thresholds chosen on validation."""


def classifier_file(path: str | os.PathLike) -> Path:
    """A run folder's ``model.safetensors`` (else its best checkpoint), or the file given."""
    path = Path(path)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    return resolve_checkpoint(path)


@dataclass
class Classifier:
    ckpt: Checkpoint
    model: torch.nn.Module
    task: ClassificationTask
    device: torch.device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> Classifier:
        ckpt = load_checkpoint(classifier_file(path))
        task = task_from_description(ckpt.meta)
        if not isinstance(task, ClassificationTask):
            raise MedfoundryError(f"{path}: a '{task.name}' model, not a classifier")
        model = create_model_from_description(ckpt.meta["model"], device="meta")
        model.load_state_dict(ckpt.weights, assign=True)
        dev = torch.device(device)
        return cls(ckpt, model.to(dev).eval(), task, dev)

    @property
    def input_shape(self) -> list[int]:
        """``(Z, Y, X)`` the model was trained on."""
        return list(self.ckpt.meta["plan"]["patch_size_vox"])

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    def thresholds(self) -> list[float]:
        n = 1 if self.task.binary else len(self.classes)
        return list(self.task.thresholds or [0.5] * n)

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``(N, C, Z, Y, X)`` images as read (un-normalised) -> ``(N, K)`` class probabilities
        (binary: ``[1 - p, p]``)."""
        shape = list(images.shape[2:])
        if shape != self.input_shape or images.shape[1] != self.ckpt.meta["plan"]["in_channels"]:
            raise MedfoundryError(
                f"images of shape {list(images.shape[1:])} (C, Z, Y, X); this model reads "
                f"{[self.ckpt.meta['plan']['in_channels'], *self.input_shape]}"
            )
        intensity = self.ckpt.meta["plan"]["intensity"]
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(normalize(images[start : start + batch_size], intensity))
            out.append(self.task.decode(self.model(x.to(self.device)).cpu()).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)

    def calls(self, p: np.ndarray) -> np.ndarray:
        """Predicted classes: binary and multi-label ``p >= threshold``, multi-class the arg max."""
        t = self.thresholds()
        if self.task.binary:
            return (p[:, 1] >= t[0]).astype(np.int64)
        if self.task.multilabel:
            return (p >= np.asarray(t)).astype(np.int64)
        return p.argmax(1)
