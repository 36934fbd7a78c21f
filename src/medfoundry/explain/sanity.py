"""Sanity checks of saliency maps that the field asks for (Adebayo et al. 2018, "Sanity checks for
saliency maps"): a map that does not change when the weights are randomised explains the input, not
the model; and where the evidence is known (a shape mask), how much of the map falls on it."""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn

RANDOMIZE_SEED = 20181010
"""Not a training seed (0 would rebuild the initial weights of a run seeded 0)."""


def randomized_copy(model: nn.Module, seed: int = RANDOMIZE_SEED) -> nn.Module:
    """A copy of ``model`` with every layer's parameters re-initialised (the model-randomisation
    test's "cascading" end point: nothing learned is left); the global random state is untouched."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in twin.modules():
            if m is not twin and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        for name, p in twin.named_parameters():  # e.g. position embeddings: plain parameters
            if "pos_embed" in name:
                nn.init.trunc_normal_(p, std=0.02)
    return twin


def rank_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of ``|a|`` and ``|b|`` over voxels (1: the same ranking)."""
    r = stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
    return float(0.0 if np.isnan(r) else r)


def fraction_inside(saliency: np.ndarray, mask: np.ndarray, dilate_vox: int = 0) -> dict:
    """The share of ``|saliency|`` inside ``mask`` (dilated by ``dilate_vox`` voxels) and the share
    of the volume the region covers (what a map spread at random would get)."""
    region = mask.astype(bool)
    if dilate_vox:
        region = ndimage.binary_dilation(region, iterations=dilate_vox)
    mass = np.abs(saliency)
    total = float(mass.sum())
    return {
        "inside": float(mass[region].sum() / total) if total else float("nan"),
        "chance": float(region.mean()),
    }
