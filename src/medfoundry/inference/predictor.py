"""``Predictor``: load a checkpoint once, segment many volumes in their own geometry.

Per volume: the training preprocessing (from the plan stored in the checkpoint) -> sliding-window
logits on the preprocessed grid (optionally averaged over mirrored copies) -> logits resampled back
to the cropped input grid -> label ids -> pasted into the input's full extent and written with the
input's header. Output ids: a model trained on one dataset (or asked for one with ``dataset=``)
writes that dataset's own label ids; a pool model otherwise writes the pool's global ids.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry import MedfoundryError
from medfoundry.device import parse_device
from medfoundry.inference.sliding_window import predict_sliding_window
from medfoundry.io import Volume
from medfoundry.models.registry import create_model_from_description
from medfoundry.preprocessing.transform import transform_volume
from medfoundry.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class PredictOptions:
    step_fraction: float = 0.5
    """Tile step as a fraction of the patch (smaller: more overlap, slower, slightly better)."""
    mirror: bool | None = None
    """Average over mirrored copies (test-time augmentation). None: on with CUDA, off on CPU. Never
    along the left-right axis when a predicted class name says left or right."""
    amp: bool = True
    """bf16 autocast where native (see :mod:`medfoundry.device`)."""
    tiles_per_batch: int = 1
    dataset: str | None = None
    """Which pool dataset's preprocessing and label ids to use (default: the only one, else the pool's
    first dataset's preprocessing with global ids)."""
    classes: list[str] | None = None
    """Only these classes (names, or ids in the output id space); the rest become background."""
    save_probabilities: bool = False


@dataclass
class Prediction:
    labels: Volume
    """``(1, Z, Y, X)`` integer label map in the input geometry."""
    probabilities: np.ndarray | None
    """``(K, Z, Y, X)`` float16 per predicted class (in ``class_names`` order), or None."""
    class_names: list[str]
    class_ids: list[int]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the best (else final, else latest) checkpoint of a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "final.pt", "latest.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise MedfoundryError(f"{path}: no checkpoints/best.pt, final.pt or latest.pt")
    return path


class Predictor:
    """Holds one model and its preprocessing; :meth:`predict` segments a :class:`Volume`."""

    def __init__(self, ckpt: dict, device: str = "auto", options: PredictOptions | None = None):
        self.options = options or PredictOptions()
        self.device = parse_device(device)
        self.meta = ckpt
        self.model = create_model_from_description(ckpt["model"])
        self.model.load_state_dict(ckpt["state_dict"])
        self.model.to(self.device).eval()
        self.patch = list(ckpt["model"]["patch_size"])
        self.sigmoid = ckpt["model"]["activation"] == "sigmoid"
        self._choose_outputs()
        mirror = self.options.mirror
        self.mirror = self.device.type == "cuda" if mirror is None else mirror

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", **options) -> Predictor:
        """Load ``path`` (a ``.pt`` file or a run folder) once; ``options``: :class:`PredictOptions`."""
        ckpt = load_checkpoint(resolve_checkpoint(path))
        return cls(ckpt, device, PredictOptions(**options))

    def _choose_outputs(self) -> None:
        """Pick the dataset plan, the predicted global classes and the ids written for them."""
        plans = self.meta["plan"]["datasets"]
        datasets = self.meta.get("datasets", {})
        name = self.options.dataset or (next(iter(plans)) if len(plans) == 1 else None)
        if name is not None and name not in plans:
            raise MedfoundryError(f"unknown dataset '{name}' (model has: {', '.join(plans)})")
        self.dataset_plan = plans[name or next(iter(plans))]
        g_names = {i: n for n, i in self.meta["labels"].items() if i}
        if name is not None and name in datasets:
            l2g = {int(k): v for k, v in datasets[name]["local_to_global"].items() if v}
            pairs = [(g, local) for local, g in sorted(l2g.items())]
        else:
            pairs = [(g, g) for g in sorted(g_names)]
        if self.options.classes:
            wanted = set(self.options.classes)
            pairs = [(g, o) for g, o in pairs if g_names[g] in wanted or str(o) in wanted]
            known = {g_names[g] for g, _ in pairs} | {str(o) for _, o in pairs}
            if unknown := wanted - known:
                raise MedfoundryError(
                    f"unknown class(es) {sorted(unknown)}; the model predicts {sorted(g_names.values())}"
                )
        self.global_ids = [g for g, _ in pairs]
        self.output_ids = [o for _, o in pairs]
        self.class_names = [g_names[g] for g in self.global_ids]

    def mirror_axes(self, image: Volume) -> tuple[int, ...]:
        """Spatial axes (0=Z, 1=Y, 2=X) to mirror; the left-right one is dropped for sided classes."""
        if not self.mirror:
            return ()
        axes = (0, 1, 2)
        if any(("left" in n.lower() or "right" in n.lower()) for n in self.class_names):
            lr = int(np.argmax(np.abs(image.direction[0])))  # LPS x (left-right) component
            axes = tuple(a for a in axes if a != lr)
        return axes

    @torch.no_grad()
    def predict(self, image: Volume) -> Prediction:
        img, _, props = transform_volume(image, self.dataset_plan)
        x = torch.from_numpy(img).to(self.device)
        logits = self._logits(x, self.mirror_axes(image))  # (K, z, y, x) preprocessed grid
        if props["resampled"]:
            logits = F.interpolate(logits[None], size=props["cropped_shape_zyx"], mode="trilinear")[
                0
            ]
        probs = self._class_probabilities(logits)  # (n+1, ...) background first
        best = probs.argmax(0).cpu().numpy()
        lut = np.array([0, *self.output_ids], dtype=np.int32)
        dtype = np.uint8 if lut.max() < 256 else np.int16
        labels = np.zeros(image.shape_zyx, dtype=dtype)
        (z0, z1), (y0, y1), (x0, x1) = props["nonzero_bbox"]
        labels[z0:z1, y0:y1, x0:x1] = lut[best]
        full = None
        if self.options.save_probabilities:
            full = np.zeros((len(self.global_ids), *image.shape_zyx), dtype=np.float16)
            full[:, z0:z1, y0:y1, x0:x1] = probs[1:].cpu().numpy()
        return Prediction(image.with_array(labels[None]), full, self.class_names, self.output_ids)

    def _logits(self, x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        o = self.options
        flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
        total = None
        for flip in flips:
            dims = [a + 1 for a in flip]
            xi = torch.flip(x, dims) if dims else x
            out = predict_sliding_window(
                self.model, xi, self.patch, o.step_fraction, o.tiles_per_batch, o.amp
            )
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        return total / len(flips)

    def _class_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """``(1 + n, ...)``: background then the selected classes. Sigmoid models: a class wins where
        its probability exceeds 0.5 and every other selected class's (background is 1 - max, so it wins
        exactly where no class reaches 0.5), as in training validation."""
        if self.sigmoid:
            p = torch.sigmoid(torch.stack([logits[g - 1] for g in self.global_ids]))
            bg = 1 - p.max(0).values if len(self.global_ids) else torch.ones_like(logits[0])
            return torch.cat([bg[None], p])
        sel = torch.stack([logits[0], *(logits[g] for g in self.global_ids)])
        return torch.softmax(sel, 0)
