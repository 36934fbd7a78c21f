"""Image classification on the TSFM backbone: binary, multi-class and multi-label, 2D (one-slice
volumes) and 3D, on a pool prepared by :func:`medfoundry.data.classification.prepare_pool`.

- Head: global average + max pooling of the Transformer bottleneck and a linear layer
  (:class:`~medfoundry.models.heads.ClassificationHead`); the decoder is not run.
- Outputs: binary, one sigmoid logit for the positive class (the second class); multi-class, ``K``
  softmax logits; multi-label, ``K`` sigmoid logits.
- Loss: cross-entropy (binary and multi-label: BCE) weighted against class imbalance by the training
  counts (positive weight ``n_neg / n_pos``; multi-class weight ``n / (K n_k)``).
- Batches: ``image`` ``(B, C, Z, Y, X)`` z-scored with the plan's intensity statistics, ``label``
  ``(B,)`` int64 (or ``(B, K)`` float 0/1); batch ``k`` draws its cases (with replacement) and its
  augmentation (shifts of up to 2 voxels in-plane, and a random intensity scale / shift; in 3D also
  random flips) from ``(seed, k, rank)``, so resume is exact.
- Validation metric: AUC-ROC (multi-class and multi-label: macro one-vs-rest) over every validation
  image; ``val/mean`` is that AUC, so the best checkpoint is chosen on validation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry.data.classification import load_pool_arrays, normalize
from medfoundry.evaluation.classification import auc_roc
from medfoundry.tasks.base import BatchSource, OutputSpec, Shard
from medfoundry.utils.jsonfile import read_json

MAX_SHIFT_VOX = 2


class ClassificationTask:
    name = "classification"
    batch_keys = ("image", "label")
    metric_name = "validation AUC-ROC"
    prompt_channels = 0

    def __init__(
        self, classes: list[str], multilabel: bool = False, thresholds: list[float] | None = None
    ) -> None:
        self.classes = list(classes)
        self.multilabel = multilabel
        self.binary = not multilabel and len(classes) == 2
        self.thresholds = thresholds
        """Decision thresholds chosen on validation (binary: one; multi-label: one per label);
        None until chosen (0.5)."""
        if self.binary:
            self.outputs = OutputSpec("sigmoid", (self.classes[1],))
        else:
            self.outputs = OutputSpec("sigmoid" if multilabel else "softmax", tuple(self.classes))
        self.weights: torch.Tensor | None = None  # set from the training counts by train_batches

    @classmethod
    def from_config(cls, cfg, labels: dict[str, int], in_channels: int = 1) -> ClassificationTask:
        classes = sorted(labels, key=labels.get)
        return cls(classes, multilabel=cfg.task == "classification-multilabel")

    @classmethod
    def from_description(cls, d: dict, labels: dict[str, int], head: dict) -> ClassificationTask:
        task = cls(d["classes"], d.get("multilabel", False), d.get("thresholds"))
        task.name = d["name"]
        return task

    def describe(self) -> dict:
        return {
            "name": self.name,
            "outputs": self.outputs.to_json(),
            "classes": self.classes,
            "multilabel": self.multilabel,
            "thresholds": self.thresholds,
        }

    def head(self) -> dict:
        return {"kind": "classification", "num_outputs": len(self.outputs.channels)}

    # -- batches ---------------------------------------------------------------------------------

    def train_batches(self, src: BatchSource, start_step: int, shard: Shard) -> Iterator[dict]:
        images, labels = load_pool_arrays(src.pool_dir)
        intensity = read_json(src.pool_dir / "plan.json")["intensity"]
        index = np.array([c["index"] for c in src.train_cases])
        self.weights = torch.as_tensor(self._class_weights(labels[index]), dtype=torch.float32)
        augment = bool(getattr(src.augment, "enabled", True))
        return self._train_iter(images, labels, index, intensity, src, start_step, shard, augment)

    def _train_iter(self, images, labels, index, intensity, src, start_step, shard, augment):
        step = start_step
        while True:
            rng = np.random.default_rng([src.seed, step, shard[0]])
            chosen = np.sort(rng.choice(index, src.batch_size))
            x = torch.from_numpy(normalize(images[chosen], intensity))
            if augment:
                x = augment_batch(x, rng)
            yield {"image": x, "label": _label_tensor(labels[chosen]), "case_ids": chosen.tolist()}
            step += 1

    def validation_batches(self, src: BatchSource, shard: Shard = (0, 1)) -> Iterator[dict]:
        """Every validation image (this process's share), in batches, unaugmented."""
        images, labels = load_pool_arrays(src.pool_dir)
        intensity = read_json(src.pool_dir / "plan.json")["intensity"]
        cases = src.val_cases[shard[0] :: shard[1]]
        size = 2 * src.batch_size
        for start in range(0, len(cases), size):
            chosen = np.array([c["index"] for c in cases[start : start + size]])
            yield {
                "image": torch.from_numpy(normalize(images[chosen], intensity)),
                "label": _label_tensor(labels[chosen]),
                "case_ids": [c["id"] for c in cases[start : start + size]],
            }

    def validation_volumes(self, src: BatchSource, shard: Shard = (0, 1)):
        """Classification validates on whole images already (``validation.mode: patch``)."""
        return iter(())

    # -- loss, decoding, metric ------------------------------------------------------------------

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = outputs.float()  # (B, n_out)
        w = None if self.weights is None else self.weights.to(logits.device)
        if self.binary:
            return F.binary_cross_entropy_with_logits(
                logits[:, 0], batch["label"].float(), pos_weight=w
            )
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, batch["label"], pos_weight=w)
        return F.cross_entropy(logits, batch["label"], weight=w)

    def decode(self, outputs: torch.Tensor, classes: list[str] | None = None) -> torch.Tensor:
        """Logits ``(B, n_out)`` -> class probabilities ``(B, K)`` (binary: ``[1 - p, p]``)."""
        logits = outputs.float()
        if self.binary:
            p = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p, p], dim=1)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def new_metric(self, pooled: bool = True) -> AucAccumulator:
        return AucAccumulator(self)

    def update_metric(self, metric: AucAccumulator, outputs: torch.Tensor, batch: dict) -> None:
        metric.add(self.decode(outputs).numpy(), batch["label"].cpu().numpy())

    def _class_weights(self, labels: np.ndarray) -> np.ndarray:
        if self.multilabel or self.binary:
            pos = labels.sum(0) if self.multilabel else labels.sum()
            return np.atleast_1d((len(labels) - pos) / np.maximum(pos, 1))
        counts = np.bincount(labels, minlength=len(self.classes))
        return len(labels) / (len(self.classes) * np.maximum(counts, 1))


class AucAccumulator:
    """Probabilities and labels of every validation image (mergeable across processes)."""

    def __init__(self, task: ClassificationTask) -> None:
        self.task = task
        self.state = {"p": [], "y": []}

    def add(self, p: np.ndarray, y: np.ndarray) -> None:
        self.state["p"].append(p)
        self.state["y"].append(y)

    def merge(self, states: list[dict]) -> None:
        for s in states:
            self.state["p"] += s["p"]
            self.state["y"] += s["y"]

    def summary(self) -> dict[str, float]:
        if not self.state["p"]:
            return {}
        p, y = np.concatenate(self.state["p"]), np.concatenate(self.state["y"])
        if self.task.binary:
            auc, acc = auc_roc(y, p[:, 1]), float(((p[:, 1] >= 0.5) == y).mean())
        elif self.task.multilabel:
            auc = float(np.nanmean([auc_roc(y[:, k], p[:, k]) for k in range(p.shape[1])]))
            acc = float(((p >= 0.5) == y).mean())
        else:
            auc = float(np.nanmean([auc_roc(y == k, p[:, k]) for k in range(p.shape[1])]))
            acc = float((p.argmax(1) == y).mean())
        mean = acc if np.isnan(auc) else auc
        return {
            "val/auc_roc": round(auc, 6),
            "val/accuracy": round(acc, 6),
            "val/mean": round(mean, 6),
        }


def augment_batch(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``(B, C, Z, Y, X)``: per sample, an in-plane shift of up to ``MAX_SHIFT_VOX`` (edge values
    repeated), an intensity scale in [0.9, 1.1] and shift in [-0.1, 0.1] (z-score units); a 3D
    volume also shifts along Z and flips along each axis with probability 0.5."""
    out = torch.empty_like(x)
    three_d = x.shape[2] > 1
    for b in range(len(x)):
        v = x[b]
        shifts = rng.integers(-MAX_SHIFT_VOX, MAX_SHIFT_VOX + 1, 3)
        if not three_d:
            shifts[0] = 0
        v = _shift(v, shifts)
        if three_d:
            flips = [a + 1 for a in range(3) if rng.random() < 0.5]
            v = v.flip(flips) if flips else v
        out[b] = v * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))
    return out


def _shift(v: torch.Tensor, shifts: np.ndarray) -> torch.Tensor:
    """``(C, Z, Y, X)`` moved by ``shifts`` voxels, the edge values repeated into the gap."""
    pad = []
    for s in reversed(shifts.tolist()):  # F.pad wants the last axis first
        pad += [max(s, 0), max(-s, 0)]
    padded = F.pad(v[None], pad, mode="replicate")[0]
    z, y, x = v.shape[1:]
    sz, sy, sx = (max(-s, 0) for s in shifts.tolist())
    return padded[:, sz : sz + z, sy : sy + y, sx : sx + x]


def _label_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, np.float32 if labels.ndim == 2 else np.int64))
