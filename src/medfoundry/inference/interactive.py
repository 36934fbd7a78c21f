"""``InteractiveSession``: a promptable model's volume set once, then clicks and boxes answered one by
one, each with the updated mask, in the style of SAM's predictor (``set_image`` once, ``predict``
many times), with undo.

Coordinates are voxel indices ``(z, y, x)`` of the volume as read (the project's axis order), boxes
inclusive ``(z0, y0, x0, z1, y1, x1)``. :meth:`set_volume` runs the model's preprocessing once (crop,
normalise, resample to its grid, and the automatic mode's label map: the expensive part, timed in
``timings["set_volume_s"]``); each
interaction maps the prompts onto that grid (:func:`to_model_grid`), runs the network on a window
around the object (:func:`prompt_window`: one patch when the object fits, else tiles) with the
image and :mod:`~medfoundry.data.prompts` maps (all clicks so far, the box, and the mask shown
before this interaction), and returns the object's mask ``(Z, Y, X)`` bool in the input geometry
(logits interpolated back, as :class:`~medfoundry.inference.predictor.Predictor` does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medfoundry import MedfoundryError
from medfoundry.data.prompts import Prompts, encode_prompts
from medfoundry.inference.predictor import Predictor
from medfoundry.inference.sliding_window import predict_sliding_window
from medfoundry.io import Volume
from medfoundry.preprocessing.transform import transform_volume

BACKGROUND_LOGIT = -20.0
WINDOW_MARGIN = 0.25
"""The window reaches this fraction of the patch beyond the object's box on each side."""


def to_model_grid(zyx, props: dict) -> tuple[int, int, int]:
    """An input voxel ``(z, y, x)`` -> the nearest voxel of the preprocessed grid (crop, then the
    resampling's scale about voxel centres), clipped to that grid."""
    lo = [b[0] for b in props["nonzero_bbox"]]
    out = []
    for c, start, old, new in zip(
        zyx, lo, props["cropped_shape_zyx"], props["shape_zyx"], strict=True
    ):
        v = (float(c) - start + 0.5) * new / old - 0.5
        out.append(int(np.clip(round(v), 0, new - 1)))
    return tuple(out)


def prompt_window(grid_zyx, patch_zyx, lo_zyx, hi_zyx, margin: float = WINDOW_MARGIN) -> tuple:
    """Slices of the grid ``grid_zyx`` to run the network on for an object whose box is
    ``lo_zyx..hi_zyx`` (inclusive), centred on the box, inside the grid (the whole axis when the
    grid is smaller than the patch): one patch when the box fits in it, else the box reaching
    ``margin`` x patch beyond it on each side."""
    out = []
    for g, p, lo, hi in zip(grid_zyx, patch_zyx, lo_zyx, hi_zyx, strict=True):
        extent = hi - lo + 1
        size = min(g, p if extent <= p else extent + 2 * int(round(margin * p)))
        start = int(np.clip((lo + hi + 1) // 2 - size // 2, 0, g - size))
        out.append(slice(start, start + size))
    return tuple(out)


@dataclass
class _State:
    prompts: Prompts = field(default_factory=Prompts)
    logits: torch.Tensor | None = None
    """``(z, y, x)`` float32 on the model grid: the prompted channel's logits shown now."""


class InteractiveSession:
    """One promptable model; one volume at a time; one object at a time (:meth:`new_object`)."""

    def __init__(self, predictor: Predictor, auto_start: bool = True) -> None:
        """``auto_start``: :meth:`set_volume` also runs the automatic mode, and a first positive
        click on a structure it found starts from that structure (its connected component under
        the click) as the mask shown, so one click selects it and the next clicks correct it; a
        click elsewhere (an unseen structure) starts from nothing."""
        task = predictor.task
        if getattr(task, "name", None) != "promptable":
            raise MedfoundryError(
                f"{predictor.checkpoint_path}: a '{task.name}' model takes no prompts; train one "
                "with 'medfoundry finetune --task promptable'"
            )
        self.predictor = predictor
        self.channel = len(task.outputs.channels) - 1  # the prompted object's output channel
        self.timings: dict[str, float] = {}
        self._image: torch.Tensor | None = None
        self._warm = False
        self.auto_start = auto_start
        self._auto: np.ndarray | None = None
        self._history: list[_State] = []

    @classmethod
    def from_checkpoint(
        cls, path, device: str = "auto", auto_start: bool = True, **options
    ) -> InteractiveSession:
        """A session on a model file, checkpoint or run folder (``options``: ``PredictOptions``)."""
        return cls(Predictor.from_checkpoint(path, device, mirror=False, **options), auto_start)

    def set_volume(self, image: Volume) -> None:
        """Preprocess ``image`` ``(C, Z, Y, X)`` once for the clicks that follow (a new object)."""
        start = time.perf_counter()
        if not np.isfinite(image.array).all():
            raise MedfoundryError("the image contains NaN or infinite values")
        img, _, self.props = transform_volume(image, self.predictor.dataset_plan)
        self._image = torch.from_numpy(img).to(self.predictor.device)
        channels = self._image.shape[0] + self.predictor.task.prompt_channels
        with torch.no_grad():
            if self.auto_start:  # the automatic mode's label map (it warms the kernels too)
                empty = self._image.new_zeros((channels - self._image.shape[0], *img.shape[1:]))
                logits = self._forward(torch.cat([self._image, empty]))
                _, index = self.predictor.task.decode(logits, self.predictor.class_names)
                self._auto = index.cpu().numpy()
            elif not self._warm:  # the first pass at the patch shape builds the CPU kernels
                self._forward(self._image.new_zeros((channels, *self.predictor.patch)))
        self._warm = True
        self.input_shape = image.shape_zyx
        self.new_object()
        self.timings["set_volume_s"] = time.perf_counter() - start

    def new_object(self) -> None:
        """Forget the prompts and the mask: the next click starts another object."""
        self._history = [_State()]

    def add_point(self, zyx, positive: bool = True) -> np.ndarray:
        """A click at input voxel ``zyx`` (positive: part of the object); the updated mask."""
        state = self._next_state()
        point = to_model_grid(zyx, self.props)
        state.prompts.points.append((*point, bool(positive)))
        if positive and self._auto is not None and self.interactions == 0:
            state.prompts.previous = structure_under(self._auto, point)
        return self._answer(state)

    def add_box(self, box) -> np.ndarray:
        """A box ``(z0, y0, x0, z1, y1, x1)`` (input voxels, inclusive) replacing any earlier one."""
        box = [int(v) for v in box]
        if len(box) != 6 or any(a > b for a, b in zip(box[:3], box[3:], strict=True)):
            raise MedfoundryError(f"a box is z0,y0,x0,z1,y1,x1 with each start <= its end: {box}")
        state = self._next_state()
        state.prompts.box = (
            *to_model_grid(box[:3], self.props),
            *to_model_grid(box[3:], self.props),
        )
        return self._answer(state)

    def undo(self) -> np.ndarray:
        """Take the last interaction back; the mask shown before it."""
        if len(self._history) > 1:
            self._history.pop()
        return self.mask()

    @property
    def interactions(self) -> int:
        return len(self._history) - 1

    def mask(self) -> np.ndarray:
        """The current object's ``(Z, Y, X)`` bool mask in the input geometry."""
        logits = self._history[-1].logits
        out = np.zeros(self.input_shape, dtype=bool)
        if logits is None:
            return out
        if self.props["resampled"]:
            size = self.props["cropped_shape_zyx"]
            logits = F.interpolate(logits[None, None], size=size, mode="trilinear")[0, 0]
        (z0, z1), (y0, y1), (x0, x1) = self.props["nonzero_bbox"]
        out[z0:z1, y0:y1, x0:x1] = (logits > 0).cpu().numpy()
        return out

    def _next_state(self) -> _State:
        if self._image is None:
            raise MedfoundryError("set a volume first (set_volume)")
        last = self._history[-1]
        shown = None if last.logits is None else (last.logits > 0).cpu().numpy()
        return _State(Prompts(list(last.prompts.points), last.prompts.box, shown), last.logits)

    @torch.no_grad()
    def _answer(self, state: _State) -> np.ndarray:
        start = time.perf_counter()
        grid = tuple(self._image.shape[1:])
        window = prompt_window(grid, self.predictor.patch, *self._object_box(state))
        prompts = _crop_prompts(state.prompts, window)
        maps = torch.from_numpy(encode_prompts(prompts, [s.stop - s.start for s in window]))
        x = torch.cat([self._image[(slice(None), *window)], maps.to(self._image.device)])
        out = self._forward(x)
        logits = (
            torch.full(grid, BACKGROUND_LOGIT, device=x.device)
            if state.logits is None
            else state.logits.clone()
        )
        logits[window] = out[self.channel].float()
        state.logits = logits
        self._history.append(state)
        mask = self.mask()
        self.timings["last_interaction_s"] = time.perf_counter() - start
        return mask

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K + 1, z, y, x)`` of the window ``x`` ``(C + 4, z, y, x)``, in tiles of exactly
        the model's patch (one tile when the object fits): every pass has the shape the warm-up
        pass of :meth:`set_volume` prepared, so no click pays for new kernels."""
        p = self.predictor
        return predict_sliding_window(p.model, x, p.patch, 0.5, 1, p.options.amp)

    def _object_box(self, state: _State) -> tuple[list[int], list[int]]:
        """The model-grid box around the clicks, the box and the mask shown."""
        pts = [p[:3] for p in state.prompts.points]
        if state.prompts.box is not None:
            pts += [state.prompts.box[:3], state.prompts.box[3:]]
        if state.prompts.previous is not None and state.prompts.previous.any():
            idx = np.argwhere(state.prompts.previous)
            pts += [tuple(idx.min(0)), tuple(idx.max(0))]
        arr = np.array(pts)
        return arr.min(0).tolist(), arr.max(0).tolist()


def structure_under(labels: np.ndarray, point) -> np.ndarray | None:
    """The connected component of ``labels`` ``(Z, Y, X)`` (integer map, 0 background) holding
    ``point``, as a bool mask; None on background."""
    value = labels[tuple(point)]
    if value == 0:
        return None
    components, _ = ndimage.label(labels == value)
    return components == components[tuple(point)]


def _crop_prompts(prompts: Prompts, window: tuple) -> Prompts:
    """``prompts`` in the coordinates of the ``window`` (slices) of their grid."""
    lo = [s.start for s in window]
    points = [(z - lo[0], y - lo[1], x - lo[2], p) for z, y, x, p in prompts.points]
    box = None
    if prompts.box is not None:
        box = tuple(v - lo[i % 3] for i, v in enumerate(prompts.box))
    previous = None if prompts.previous is None else prompts.previous[window]
    return Prompts(points, box, previous)
