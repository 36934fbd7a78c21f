"""``medfoundry explain``: saliency maps of a classifier (images of a data split, or one image file)
or of one class of a segmentation model (one image file), as NIfTI heatmaps with the input's
geometry and PNG overlays, with the sanity checks on request.

Files in ``OUT``: ``<case>_<method>.nii.gz`` (``(Z, Y, X)`` float32 map; a 2D image is one slice),
``<case>_<method>.png`` (the image in grey, the map over it; 3D: three orthogonal slices through
the map's peak) and ``explain.json`` (per case: class explained, its probability, method, layer and,
with ``sanity``, the model-randomisation rank similarity and, for a binary image such as an
AdrenalMNIST3D shape mask, the share of the map on the shape and within 2 voxels of it, against
the share of the volume each covers).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from medfoundry import MedfoundryError
from medfoundry.data.classification import normalize, read_one_image, read_split
from medfoundry.explain.attribution import (
    classification_target,
    default_layer,
    resize_map,
    saliency,
    segmentation_target,
)
from medfoundry.explain.sanity import fraction_inside, randomized_copy, rank_similarity
from medfoundry.inference.classify import Classifier
from medfoundry.io import Volume, read_image, read_volume, write_volume
from medfoundry.models.sizes import total_stride
from medfoundry.pool.synonyms import resolve_class
from medfoundry.preprocessing.invert import invert_values
from medfoundry.runs.checkpoint import load_checkpoint, resolve_checkpoint
from medfoundry.utils.jsonfile import write_json

log = logging.getLogger(__name__)


def explain(
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    method: str = "gradcam",
    image: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    split: str = "val",
    cases: list[int] | None = None,
    class_name: str | None = None,
    layer: str | None = None,
    sanity: bool = False,
) -> dict:
    """Explain ``model`` (classifier: ``image`` or ``cases`` indices of ``split`` of ``data``;
    segmentation: ``image`` and ``class_name``); writes the files above, returns ``explain.json``."""
    out_dir = Path(out_dir)
    meta = load_checkpoint(_model_path(model), weights=False).meta
    if meta["task"]["name"].startswith("classification"):
        items = _classifier_items(model, image, data, split, cases, class_name)
    else:
        if image is None or class_name is None:
            raise MedfoundryError("a segmentation model is explained on -i IMAGE for one --class")
        items = _segmentation_items(model, image, class_name)
    rows = []
    for item in items:
        rows.append(_explain_one(item, method, layer, sanity, out_dir))
    report = {"model": str(model), "method": method, "cases": rows, **_means(rows)}
    write_json(out_dir / "explain.json", report)
    return report


def _model_path(model) -> Path:
    path = Path(model)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    return resolve_checkpoint(path)


class _Item:
    """One image to explain: the network input, the scalar to explain, and how to write the map."""

    def __init__(self, name, net, x, target, label, probability, image_zyx, to_image, make_target):
        self.name, self.net, self.x, self.target = name, net, x, target
        self.label, self.probability = label, probability
        self.score_name = "probability"  # segmentation: "mean_logit" over the class's region
        self.image_zyx = image_zyx  # (Z, Y, X) for the overlay, on the written map's grid
        self.to_image = to_image  # map on the network grid -> Volume with the input's geometry
        self.make_target = make_target  # net -> the same scalar for another network


def _classifier_items(model, image, data, split, cases, class_name):
    clf = Classifier.load(model)
    chosen_class = (
        None if class_name is None else clf.classes.index(resolve_class(class_name, clf.classes))
    )
    if image is not None:
        original = read_one_image(Path(image))  # the image as read, for its shape and overlay
        arr = read_one_image(Path(image), clf.input_shape).images[0]
        vol = _geometry(Path(image), original.images[0])
        sources = [(original.cases[0], arr, vol)]
    elif data is not None:
        part = read_split(data, split, clf.input_shape)
        chosen = cases if cases else list(range(min(4, len(part.cases))))
        for i in chosen:
            if not 0 <= i < len(part.cases):
                raise MedfoundryError(f"case index {i} is outside 0..{len(part.cases) - 1}")
        sources = [(f"{split}_{part.cases[i]}", part.images[i], None) for i in chosen]
    else:
        raise MedfoundryError("give -i IMAGE or --data FILE_OR_DIR to explain a classifier")
    intensity = clf.ckpt.meta["plan"]["intensity"]
    for name, raw, vol in sources:
        x = torch.from_numpy(normalize(np.asarray(raw)[None], intensity))
        p = clf.probabilities(np.asarray(raw)[None])[0]
        k = chosen_class if chosen_class is not None else _called_class(clf, p)

        def make(net, k=k):
            return classification_target(net, k, clf.task.binary)

        def to_image(m, vol=vol):
            if vol is None:
                return Volume(m[None].astype(np.float32), np.ones(3))
            return vol.with_array(resize_map(m, vol.shape_zyx)[None].astype(np.float32))

        shown = np.asarray(raw, np.float32)[0] if vol is None else vol.array[0]
        yield _Item(
            name, clf.model, x, make(clf.model), clf.classes[k], float(p[k]), shown, to_image, make
        )


def _called_class(clf: Classifier, p: np.ndarray) -> int:
    """The class a classifier calls (multi-label: the most probable label)."""
    return int(clf.calls(p[None])[0]) if not clf.task.multilabel else int(np.argmax(p))


def _geometry(path: Path, array_czyx: np.ndarray) -> Volume:
    """The image's own geometry (a picture file: 1 mm pixels) with its array."""
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return Volume(np.asarray(array_czyx, np.float32), np.ones(3))
    return read_volume(path).with_array(np.asarray(array_czyx, np.float32))


def _segmentation_items(model, image, class_name):
    from medfoundry.inference.predictor import Predictor
    from medfoundry.preprocessing.transform import transform_volume

    pred = Predictor.from_checkpoint(model, device="cpu", mirror=False)
    channels = list(pred.task.outputs.channels)
    name = resolve_class(class_name, [c for c in channels if c != "background"])
    channel = channels.index(name)
    vol = read_image(image)
    img, _, props = transform_volume(vol, pred.dataset_plan)
    x, crop = _fit_to_network(torch.from_numpy(img), pred)
    softmax = pred.task.outputs.activation == "softmax"

    def make(net):
        return segmentation_target(net, channel, x, softmax)

    def to_image(m):
        grid = np.zeros(props["shape_zyx"], np.float32)
        grid[crop] = m[tuple(slice(0, s.stop - s.start) for s in crop)]
        return vol.with_array(invert_values(grid, props)[None])  # as predictions are inverted

    target = make(pred.model)
    with torch.no_grad():  # the class's mean logit over its predicted region (no probability)
        score = float(target(x)[0])
    item = _Item(
        Path(image).name.split(".")[0],
        pred.model,
        x,
        target,
        name,
        score,
        vol.array[0],
        to_image,
        make,
    )
    item.score_name = "mean_logit"
    yield item


def _fit_to_network(img: torch.Tensor, pred) -> tuple[torch.Tensor, tuple]:
    """The preprocessed ``(C, z, y, x)`` image as a batch of one the network reads: cut to at most
    twice the patch along each axis (from the centre), zero-padded up to the next multiple of the
    total stride; returns it and the slices of the preprocessed grid it covers."""
    stride = total_stride(pred.description["model"]["strides"])
    crop = []
    for size, patch in zip(img.shape[1:], pred.patch, strict=True):
        keep = min(size, 2 * patch)
        start = (size - keep) // 2
        crop.append(slice(start, start + keep))
    x = img[(slice(None), *crop)]
    pad = []
    for size, s in zip(reversed(x.shape[1:]), reversed(stride), strict=True):
        pad += [0, (-size) % s]
    x = torch.nn.functional.pad(x, pad)
    if pred.task.prompt_channels:
        x = torch.cat([x, x.new_zeros((pred.task.prompt_channels, *x.shape[1:]))])
    return x[None].float(), tuple(crop)


def _explain_one(item: _Item, method: str, layer: str | None, sanity: bool, out_dir: Path) -> dict:
    layer = layer or default_layer(item.net)
    m = saliency(method, item.target, item.x, item.net, layer)
    vol = item.to_image(m)
    out_dir.mkdir(parents=True, exist_ok=True)
    nii = write_volume(vol, out_dir / f"{item.name}_{method}.nii.gz")
    _overlay(item.image_zyx, vol.array[0], out_dir / f"{item.name}_{method}.png", item.label)
    row = {
        "case": item.name,
        "class": item.label,
        item.score_name: item.probability,
        "method": method,
        "layer": layer if method == "gradcam" else None,
        "heatmap": nii.name,
    }
    if sanity:
        twin = randomized_copy(item.net)
        m_rand = saliency(method, item.make_target(twin), item.x, twin, layer)
        row["randomized_rank_similarity"] = rank_similarity(m, m_rand)
        shown = item.image_zyx
        if np.unique(shown).size == 2:  # a shape mask (AdrenalMNIST3D): the evidence is the shape
            mask = shown > shown.min()
            row["on_shape"] = fraction_inside(vol.array[0], mask)
            row["near_shape_2vox"] = fraction_inside(vol.array[0], mask, dilate_vox=2)
    return row


def _means(rows: list[dict]) -> dict:
    out = {}
    for key in ("randomized_rank_similarity",):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[f"mean_{key}"] = float(np.mean(vals))
    for key in ("on_shape", "near_shape_2vox"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[f"mean_{key}"] = {k: float(np.nanmean([v[k] for v in vals])) for k in vals[0]}
    return out


def _overlay(image_zyx: np.ndarray, m: np.ndarray, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z, y, x = np.unravel_index(int(np.argmax(np.abs(m))), m.shape)
    if m.shape[0] == 1:
        views = [(image_zyx[0], m[0], "image")]
    else:
        views = [
            (image_zyx[z], m[z], f"axial z={z}"),
            (image_zyx[:, y], m[:, y], f"coronal y={y}"),
            (image_zyx[:, :, x], m[:, :, x], f"sagittal x={x}"),
        ]
    fig, axes = plt.subplots(1, len(views), figsize=(3.2 * len(views), 3.4), squeeze=False)
    scale = float(np.abs(m).max()) or 1.0
    for ax, (img, heat, title) in zip(axes[0], views, strict=True):
        ax.imshow(img, cmap="gray")
        ax.imshow(np.abs(heat) / scale, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{path.stem} ({label})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
