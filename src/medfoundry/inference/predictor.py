"""``Predictor``: load a model once (weights only), segment many volumes in their own geometry.

Per volume: the training preprocessing (from the plan stored with the model) -> sliding-window
logits on the preprocessed grid (optionally averaged over mirrored copies) -> logits resampled back
to the cropped input grid -> the task's decision rule (:meth:`SegmentationTask.decode`) -> label ids
pasted into the input's full extent and written with the input's header. Output ids: a model trained
on one dataset (or asked for one with ``dataset=``) writes that dataset's own label ids; a pool model
otherwise writes the pool's global ids.

A volume that preprocessing up-samples by more than :data:`UPSAMPLE_WARN_FACTOR` (e.g. a 512 x 512 x
32 CT at 0.78 x 0.78 x 7.5 mm for a model planned at 1 mm: ~39M voxels, ~3,000 tiles) is predicted
with a warning giving the factor, the voxel count and the tile count: its time grows with them.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medfoundry import MedfoundryError
from medfoundry.inference.postprocess import keep_largest_component
from medfoundry.inference.prediction_record import sha256_file
from medfoundry.inference.sliding_window import (
    check_step_fraction,
    count_tiles,
    predict_sliding_window,
)
from medfoundry.io import Volume
from medfoundry.models.registry import create_model_from_description
from medfoundry.preprocessing.transform import transform_volume
from medfoundry.runs.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from medfoundry.tasks import task_from_description
from medfoundry.utils.device import parse_device

log = logging.getLogger(__name__)
UPSAMPLE_WARN_FACTOR = 4.0
"""Warn when the preprocessed grid holds more than this many times the (cropped) input's voxels."""


@dataclass
class PredictOptions:
    step_fraction: float = 0.5
    """Tile step as a fraction of the patch (smaller: more overlap, slower, slightly better)."""
    mirror: bool | None = None
    """Average over mirrored copies (test-time augmentation). None: on with CUDA, off on CPU. Never
    along the left-right axis when a predicted class name says left or right."""
    amp: bool = True
    """bf16 autocast where native (see :mod:`medfoundry.utils.device`)."""
    tiles_per_batch: int = 1
    dataset: str | None = None
    """Which pool dataset's preprocessing and label ids to use (default: the only one, else the pool's
    first dataset's preprocessing with global ids)."""
    classes: list[str] | None = None
    """Only these classes (names, or ids in the output id space); the rest become background."""
    save_probabilities: bool = False
    largest_component: list[str] | None = None
    """Classes (names or output ids; ``["all"]``: every class) that keep only their largest
    connected component (:mod:`medfoundry.inference.postprocess`); probabilities are unchanged."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`MedfoundryError` for a value no prediction can use (named as the CLI flag)."""
        try:
            check_step_fraction(self.step_fraction)
        except (TypeError, ValueError):
            raise MedfoundryError(
                f"--step (step_fraction) must be in (0, 1] (the tile step as a fraction of the "
                f"patch), got {self.step_fraction}"
            ) from None
        if not isinstance(self.tiles_per_batch, int) or self.tiles_per_batch < 1:
            raise MedfoundryError(f"tiles_per_batch must be >= 1, got {self.tiles_per_batch}")


@dataclass
class Prediction:
    labels: Volume
    """``(1, Z, Y, X)`` integer label map in the input geometry."""
    probabilities: np.ndarray | None
    """``(K, Z, Y, X)`` float16 per predicted class (in ``class_names`` order), or None."""
    class_names: list[str]
    class_ids: list[int]


def output_pairs(description: dict, dataset: str | None = None) -> list[tuple[int, int]]:
    """``(global id, id written)`` of every class a model predicts: with ``dataset`` (a dataset of
    the model's pool; default: the only one of a one-dataset model) that dataset's own ids, else the
    global ids. ``description``: a checkpoint's description."""
    plans = description["plan"]["datasets"]
    datasets = description.get("datasets", {})
    name = dataset or (next(iter(plans)) if len(plans) == 1 else None)
    if name is not None and name in datasets:
        l2g = {int(k): v for k, v in datasets[name]["local_to_global"].items() if v}
        return [(g, local) for local, g in sorted(l2g.items())]
    return [(g, g) for g in sorted(i for i in description["labels"].values() if i)]


class Predictor:
    """Holds one network (weights only, no optimizer state), its description and preprocessing;
    :meth:`predict` segments a :class:`Volume`."""

    def __init__(
        self, ckpt: Checkpoint, device: str = "auto", options: PredictOptions | None = None
    ):
        self.options = options or PredictOptions()
        self.options.check()
        self.checkpoint_path = Path(ckpt.path)
        self._loaded_file = _identity(self.checkpoint_path)  # the file the weights came from
        self.device = parse_device(device)
        self.description = ckpt.description()
        self.task = task_from_description(self.description)
        if self.task.outputs.activation == "identity":  # e.g. a masked-volume (SSL) model
            raise MedfoundryError(
                f"{ckpt.path}: a '{self.task.name}' model outputs intensities, not labels; "
                "fine-tune it for segmentation first (medfoundry finetune --from ...)"
            )
        self.model = create_model_from_description(self.description["model"], device="meta")
        try:  # the loaded tensors become the parameters: no second copy
            self.model.load_state_dict(ckpt.weights, assign=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()[:200]
            raise MedfoundryError(
                f"{ckpt.path}: its weights do not fit the network it describes ({first})"
            ) from None
        self.model.to(self.device).eval()
        self.patch = list(self.description["model"]["patch_size"])
        self._choose_outputs()
        mirror = self.options.mirror
        self.mirror = self.device.type == "cuda" if mirror is None else mirror

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", **options) -> Predictor:
        """Load ``path`` (a model file, a checkpoint, or a run folder: its best, else final, else
        latest checkpoint) once; ``options``: :class:`PredictOptions`."""
        options = PredictOptions(**options)
        return cls(load_checkpoint(resolve_checkpoint(path)), device, options)

    def _choose_outputs(self) -> None:
        """Pick the dataset plan, the predicted global classes and the ids written for them."""
        plans = self.description["plan"]["datasets"]
        name = self.options.dataset or (next(iter(plans)) if len(plans) == 1 else None)
        if name is not None and name not in plans:
            raise MedfoundryError(f"unknown dataset '{name}' (model has: {', '.join(plans)})")
        self.dataset_plan = plans[name or next(iter(plans))]
        g_names = {i: n for n, i in self.description["labels"].items() if i}
        pairs = output_pairs(self.description, name)
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
        self.largest_component_ids = self._named_ids(self.options.largest_component or [])

    def _named_ids(self, wanted: list[str]) -> list[int]:
        """The output ids of classes given by name or output id (``all``: every predicted class)."""
        if "all" in wanted:
            return list(self.output_ids)
        by_name = dict(zip(self.class_names, self.output_ids, strict=True))
        ids = [by_name.get(w, int(w) if w.isdigit() else None) for w in wanted]
        if unknown := [w for w, i in zip(wanted, ids, strict=True) if i not in self.output_ids]:
            raise MedfoundryError(
                f"--largest-component: unknown class(es) {unknown}; predicted: {self.class_names}"
            )
        return sorted(set(ids))

    def mirror_axes(self, image: Volume) -> tuple[int, ...]:
        """Spatial axes (0=Z, 1=Y, 2=X) to mirror; the left-right one is dropped for sided classes."""
        if not self.mirror:
            return ()
        axes = (0, 1, 2)
        if any(("left" in n.lower() or "right" in n.lower()) for n in self.class_names):
            lr = int(np.argmax(np.abs(image.direction[0])))  # LPS x (left-right) component
            axes = tuple(a for a in axes if a != lr)
        return axes

    @cached_property
    def model_sha256(self) -> str:
        """sha256 of the model file the weights were loaded from (read once, when first asked; a
        file replaced since the load, e.g. a run's best checkpoint during training, is an error)."""
        digest = sha256_file(self.checkpoint_path)
        if _identity(self.checkpoint_path) != self._loaded_file:
            raise MedfoundryError(
                f"{self.checkpoint_path}: the model file changed after it was loaded; run again"
            )
        return digest

    def output_settings(self) -> dict:
        """Every setting, as resolved, that changes what :meth:`predict` returns (JSON)."""
        o = self.options
        return {
            "step_fraction": float(o.step_fraction),
            "mirror": bool(self.mirror),
            "amp": bool(o.amp),
            "dataset": o.dataset,
            "class_names": list(self.class_names),
            "output_ids": [int(i) for i in self.output_ids],
            "save_probabilities": bool(o.save_probabilities),
            "largest_component_ids": list(self.largest_component_ids),
        }

    @torch.no_grad()
    def predict(self, image: Volume, progress: bool = False, name: str = "image") -> Prediction:
        """Segment ``image`` (``(C, Z, Y, X)``, any geometry); ``progress``: a bar over tiles;
        ``name``: how log messages call the image. NaN/Inf voxels are a :class:`MedfoundryError`."""
        if not np.isfinite(image.array).all():
            bad = int((~np.isfinite(image.array)).sum())
            raise MedfoundryError(
                f"{name}: contains NaN or infinite values ({bad:,} of {image.array.size:,} voxels)"
            )
        img, _, props = transform_volume(image, self.dataset_plan)
        axes = self.mirror_axes(image)
        self._warn_if_upsampled(props, 2 ** len(axes), name)
        x = torch.from_numpy(img).to(self.device)
        if self.task.prompt_channels:  # a promptable model without prompts: its automatic mode
            x = torch.cat([x, x.new_zeros((self.task.prompt_channels, *x.shape[1:]))])
        logits = self._logits(x, axes, progress)  # (K, z, y, x) preprocessed grid
        if props["resampled"]:
            logits = F.interpolate(logits[None], size=props["cropped_shape_zyx"], mode="trilinear")
            logits = logits[0]
        probs, best = self.task.decode(logits, self.class_names)  # (1 + n, ...), background first
        lut = np.array([0, *self.output_ids], dtype=np.int32)
        dtype = np.uint8 if lut.max() < 256 else np.int16
        labels = np.zeros(image.shape_zyx, dtype=dtype)
        (z0, z1), (y0, y1), (x0, x1) = props["nonzero_bbox"]
        labels[z0:z1, y0:y1, x0:x1] = lut[best.cpu().numpy()]
        if self.largest_component_ids:
            labels = keep_largest_component(labels, self.largest_component_ids)
        full = None
        if self.options.save_probabilities:
            full = np.zeros((len(self.global_ids), *image.shape_zyx), dtype=np.float16)
            full[:, z0:z1, y0:y1, x0:x1] = probs[1:].cpu().numpy()
        return Prediction(image.with_array(labels[None]), full, self.class_names, self.output_ids)

    def _warn_if_upsampled(self, props: dict, passes: int, name: str) -> None:
        """Log a warning when preprocessing multiplied the voxel count by > UPSAMPLE_WARN_FACTOR."""
        before = math.prod(props["cropped_shape_zyx"])
        after = math.prod(props["shape_zyx"])
        if after <= UPSAMPLE_WARN_FACTOR * before:
            return
        tiles = count_tiles(props["shape_zyx"], self.patch, self.options.step_fraction)
        log.warning(
            "%s: up-sampled %.1fx to the model's %s mm grid (%s -> %s voxels, %s tiles%s); "
            "this case will be slow",
            name,
            after / before,
            "x".join(f"{s:g}" for s in props["target_spacing_mm"]),
            f"{before:,}",
            f"{after:,}",
            f"{tiles:,}",
            f" x {passes} mirrored passes" if passes > 1 else "",
        )

    def _logits(self, x: torch.Tensor, axes: tuple[int, ...], progress: bool) -> torch.Tensor:
        o = self.options
        flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
        total = None
        for i, flip in enumerate(flips):
            dims = [a + 1 for a in flip]
            xi = torch.flip(x, dims) if dims else x
            label = f"tiles {i + 1}/{len(flips)}" if len(flips) > 1 else "tiles"
            out = predict_sliding_window(
                self.model,
                xi,
                self.patch,
                o.step_fraction,
                o.tiles_per_batch,
                o.amp,
                progress and label,
            )
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        return total / len(flips)


def _identity(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime in ns): changes when a file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns
