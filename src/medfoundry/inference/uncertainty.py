"""Segmentation with a per-voxel uncertainty map and a per-case score, from test-time augmentation.

The image is predicted once per mirroring of its spatial axes (8 passes for 3 axes; the left-right
axis is left out for sided classes, as in :class:`Predictor`); the decoded class probabilities
``(1 + n, Z, Y, X)`` of the passes are averaged. Per voxel:

- ``entropy``: the predictive entropy of the mean distribution, ``-sum_k p_k ln p_k`` (nats;
  0 = every pass certain of one class, ln(1 + n) = uniform).

Per case (on the preprocessed grid, so a case's score does not depend on its resampling):

- ``mean_entropy_fg``: mean entropy over the voxels any pass calls foreground (the region whose
  outline is in doubt; the score ranked by default);
- ``mean_entropy``: over the whole preprocessed volume;
- ``tta_disagreement``: 1 - the mean Dice of each pass's foreground with the averaged foreground.

MC-dropout is not offered: the segmentation networks have no dropout to sample.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from medfoundry.evaluation.metrics import dice_score
from medfoundry.inference.predictor import Predictor
from medfoundry.inference.sliding_window import predict_sliding_window
from medfoundry.io import Volume
from medfoundry.preprocessing.invert import invert_values
from medfoundry.preprocessing.resample import resample_linear
from medfoundry.preprocessing.transform import transform_volume

SCORES = ("mean_entropy_fg", "mean_entropy", "tta_disagreement")


@dataclass
class UncertainPrediction:
    labels: Volume
    """``(1, Z, Y, X)`` label map of the averaged probabilities, the input's geometry and ids."""
    entropy: Volume
    """``(1, Z, Y, X)`` float32 predictive entropy (nats), the input's geometry."""
    scores: dict[str, float]
    passes: int


@torch.no_grad()
def predict_with_uncertainty(predictor: Predictor, image: Volume) -> UncertainPrediction:
    """Segment ``image`` ``(C, Z, Y, X)`` with test-time mirroring and measure how the passes agree."""
    img, _, props = transform_volume(image, predictor.dataset_plan)
    x = torch.from_numpy(img).to(predictor.device)
    if predictor.task.prompt_channels:
        x = torch.cat([x, x.new_zeros((predictor.task.prompt_channels, *x.shape[1:]))])
    axes = _mirror_axes(predictor, image)
    flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    total, members = None, []
    o = predictor.options
    for flip in flips:
        dims = [a + 1 for a in flip]
        xi = torch.flip(x, dims) if dims else x
        logits = predict_sliding_window(
            predictor.model, xi, predictor.patch, o.step_fraction, o.tiles_per_batch, o.amp
        )
        logits = torch.flip(logits, dims) if dims else logits
        probs, best = predictor.task.decode(logits, predictor.class_names)  # (1 + n, z, y, x)
        total = probs if total is None else total + probs
        members.append((best > 0).cpu().numpy())
    mean = (total / len(flips)).cpu().numpy()  # (1 + n, z, y, x)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, 1.0))).sum(0)
    scores = case_scores(entropy, members, mean.argmax(0) > 0)
    labels = _labels(predictor, mean, props, image)
    return UncertainPrediction(
        labels, image.with_array(invert_values(entropy, props)[None]), scores, len(flips)
    )


def case_scores(entropy: np.ndarray, members: list[np.ndarray], fg: np.ndarray) -> dict:
    """The per-case scores above from the entropy map, each pass's foreground and the averaged
    foreground (all ``(Z, Y, X)``)."""
    union = np.logical_or.reduce(members)
    dices = [dice_score(m, fg) for m in members]
    dices = [1.0 if np.isnan(d) else d for d in dices]  # both empty: full agreement
    return {
        "mean_entropy_fg": float(entropy[union].mean()) if union.any() else 0.0,
        "mean_entropy": float(entropy.mean()),
        "tta_disagreement": float(1.0 - np.mean(dices)),
    }


def _mirror_axes(predictor: Predictor, image: Volume) -> tuple[int, ...]:
    mirror = predictor.mirror
    predictor.mirror = True
    try:
        return predictor.mirror_axes(image)
    finally:
        predictor.mirror = mirror


def _labels(predictor: Predictor, mean: np.ndarray, props: dict, image: Volume) -> Volume:
    """The winner of the averaged probabilities, resampled (linearly, per class) to the input grid."""
    if props["resampled"]:
        mean = np.stack([resample_linear(p, props["cropped_shape_zyx"]) for p in mean])
    lut = np.array([0, *predictor.output_ids], dtype=np.int32)
    labels = np.zeros(image.shape_zyx, dtype=np.uint8 if lut.max() < 256 else np.int16)
    (z0, z1), (y0, y1), (x0, x1) = props["nonzero_bbox"]
    labels[z0:z1, y0:y1, x0:x1] = lut[mean.argmax(0)]
    return image.with_array(labels[None])
