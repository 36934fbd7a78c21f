"""``medfoundry segment``: one image, automatic or prompted, written with the input's geometry.

- Prompted (:class:`ObjectPrompts`, from ``--point``/``--box`` or a prompts JSON): each object's box,
  then its clicks, are given to an :class:`~.interactive.InteractiveSession` one interaction at a
  time, as a user would; object ``i`` is written with its ``label`` (default ``i + 1``); a later
  object overwrites an earlier one where they overlap.
- Automatic (no prompts): the model's classes (``classes``: free-text names resolved by
  :func:`medfoundry.pool.synonyms.resolve_class`), as ``medfoundry predict`` writes them.

A prompts JSON: ``{"objects": [{"name": "lesion", "label": 1, "points": [[z, y, x], [z, y, x,
false]], "box": [z0, y0, x0, z1, y1, x1]}, ...]}``: voxel indices of the input as read, in (Z, Y, X)
order; a point's fourth value false makes it negative; the box is inclusive.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.inference.interactive import InteractiveSession
from medfoundry.inference.predict_files import write_labels
from medfoundry.inference.predictor import Predictor
from medfoundry.io import read_image
from medfoundry.io.dicom import split_selector
from medfoundry.pool.synonyms import resolve_class


@dataclass
class ObjectPrompts:
    points: list[tuple[int, int, int, bool]] = field(default_factory=list)
    box: tuple[int, ...] | None = None
    name: str = "object"
    label: int | None = None


def parse_point(text: str) -> tuple[int, int, int, bool]:
    """``Z,Y,X`` or ``Z,Y,X:neg`` (``:pos`` allowed) -> ``(z, y, x, positive)``."""
    coords, _, sign = text.partition(":")
    try:
        z, y, x = (int(v) for v in coords.split(","))
    except ValueError:
        raise MedfoundryError(
            f"--point {text!r}: give Z,Y,X or Z,Y,X:neg (voxel indices)"
        ) from None
    if sign not in ("", "pos", "neg"):
        raise MedfoundryError(f"--point {text!r}: the suffix is :neg or :pos")
    return z, y, x, sign != "neg"


def parse_box(text: str) -> tuple[int, ...]:
    """``Z0,Y0,X0,Z1,Y1,X1`` (inclusive voxel indices)."""
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 6 or any(a > b for a, b in zip(box[:3], box[3:], strict=True)):
        raise MedfoundryError(f"--box {text!r}: give Z0,Y0,X0,Z1,Y1,X1 with each start <= its end")
    return box


def read_prompts(path: str | os.PathLike) -> list[ObjectPrompts]:
    """The objects of a prompts JSON (see the module docstring)."""
    try:
        doc = json.loads(Path(path).read_text())
        objects = []
        for i, o in enumerate(doc["objects"]):
            points = [
                (*(int(v) for v in p[:3]), bool(p[3]) if len(p) > 3 else True)
                for p in o.get("points", [])
            ]
            box = parse_box(",".join(str(v) for v in o["box"])) if o.get("box") else None
            label = int(o.get("label", i + 1))
            objects.append(ObjectPrompts(points, box, str(o.get("name", f"object {i + 1}")), label))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise MedfoundryError(f"{path}: not a prompts file ({type(exc).__name__}: {exc})") from None
    if not objects or any(not o.points and o.box is None for o in objects):
        raise MedfoundryError(f"{path}: every object needs points or a box")
    return objects


def check_inside(objects: list[ObjectPrompts], shape_zyx) -> None:
    """A one-line error for a click or box corner outside a volume of ``shape_zyx``."""
    for o in objects:
        corners = [p[:3] for p in o.points] + ([o.box[:3], o.box[3:]] if o.box else [])
        for c in corners:
            if any(not 0 <= v < s for v, s in zip(c, shape_zyx, strict=True)):
                raise MedfoundryError(
                    f"{o.name}: voxel {tuple(c)} is outside the image (Z, Y, X = {tuple(shape_zyx)})"
                )


def segment_image(
    model: str | os.PathLike,
    image_path: str | os.PathLike,
    out_path: str | os.PathLike,
    objects: list[ObjectPrompts] | None = None,
    classes: list[str] | None = None,
    device: str = "auto",
    dataset: str | None = None,
    output_type: str = "nifti",
) -> dict:
    """Segment one image and write ``out_path`` (``dataset``: a pool model's dataset whose
    preprocessing and ids to use; ``output_type``: ``nifti`` or ``dicom-seg`` for a DICOM series
    input); returns what was written (labels and names)."""
    if output_type == "dicom-seg" and not Path(split_selector(image_path)[0]).is_dir():
        raise MedfoundryError("--output-type dicom-seg needs a DICOM series folder as input")
    image = read_image(image_path)
    if objects:
        check_inside(objects, image.shape_zyx)
        session = InteractiveSession.from_checkpoint(model, device, dataset=dataset)
        session.set_volume(image)
        labels = np.zeros(image.shape_zyx, dtype=np.uint16)
        written = {}
        for i, o in enumerate(objects):
            session.new_object()
            if o.box is not None:
                session.add_box(o.box)
            for z, y, x, positive in o.points:
                session.add_point((z, y, x), positive)
            label = o.label or i + 1
            labels[session.mask()] = label
            written[o.name] = label
        dtype = np.uint8 if labels.max() < 256 else np.uint16
        names = {label: name for name, label in written.items()}
        write_labels(image.with_array(labels.astype(dtype)[None]), out_path, names, output_type)
        return {"labels": written, "mode": "prompted", "timings": session.timings}
    predictor = Predictor.from_checkpoint(model, device, mirror=False, dataset=dataset)
    if classes:
        names = [resolve_class(c, predictor.class_names) for c in classes]
        predictor = Predictor.from_checkpoint(
            model, device, mirror=False, dataset=dataset, classes=names
        )
    prediction = predictor.predict(image, name=str(image_path))
    names = dict(zip(prediction.class_ids, prediction.class_names, strict=True))
    write_labels(prediction.labels, out_path, names, output_type)
    return {
        "labels": dict(zip(prediction.class_names, prediction.class_ids, strict=True)),
        "mode": "automatic",
    }
