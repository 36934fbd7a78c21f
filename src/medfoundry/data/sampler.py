"""Patch sampling from the preprocessed cache with the pool's per-case probabilities.

A fraction ``fg_fraction`` of patches is centred on a random voxel of a random class that the case's
dataset annotates and that is present in the case (nnU-Net's foreground oversampling); the rest are
placed uniformly. A patch reaching outside the case is padded (image 0 = the normalised mean, label 0).

``draw_dataset`` + ``sample(..., dataset=)`` draw a case in two steps (a dataset with probability equal
to its cases' total probability, then a case of it with the renormalised probabilities), which leaves
every case's probability unchanged; the loader uses it to fill a batch from one dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medfoundry.preprocessing.cache import load_case, load_locations


@dataclass
class PatchSampler:
    pool_dir: str
    cases: list[dict]
    """pool.json case records to draw from (their probabilities are renormalised)."""
    fg_fraction: float = 0.33
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        p = np.array([c["sampling_probability"] for c in self.cases], dtype=np.float64)
        self.probabilities = p / p.sum()
        datasets = np.array([c["dataset"] for c in self.cases])
        self._by_dataset = {}  # name -> (case indices, their renormalised probabilities)
        self.dataset_probabilities = {}
        for name in sorted({str(d) for d in datasets}):
            index = np.flatnonzero(datasets == name)
            mass = float(self.probabilities[index].sum())
            self._by_dataset[name] = (index, self.probabilities[index] / mass)
            self.dataset_probabilities[name] = mass

    def draw_dataset(self, rng: np.random.Generator) -> str | None:
        """A dataset name with probability equal to its cases' total probability; None (drawing
        nothing from ``rng``) when all cases come from one dataset."""
        if len(self.dataset_probabilities) < 2:
            return None
        names = list(self.dataset_probabilities)
        return names[int(rng.choice(len(names), p=list(self.dataset_probabilities.values())))]

    def sample(self, rng: np.random.Generator, region_zyx, dataset: str | None = None) -> dict:
        """One region of size ``region_zyx`` (Z, Y, X) of a case drawn from all cases, or from
        ``dataset``'s: ``{image (C, Z, Y, X) float32, label (Z, Y, X) uint8, case_id, valid_labels, center}``."""
        case = self.cases[self._draw_case(rng, dataset)]
        image, label, props = load_case(self.pool_dir, case["id"])
        shape = np.array(label.shape)
        size = np.array(region_zyx)
        present = [c for c in case["valid_labels"] if c in props["classes_present"]]
        if present and rng.random() < self.fg_fraction:
            cls = present[int(rng.integers(len(present)))]
            locs = self._locations(case["id"])[cls]
            center = locs[int(rng.integers(len(locs)))]
        else:
            lo = np.minimum(size // 2, shape // 2)
            hi = np.maximum(shape - (size - size // 2), shape // 2)
            center = np.array([int(rng.integers(a, b + 1)) for a, b in zip(lo, hi, strict=True)])
        start = np.asarray(center) - size // 2
        return {
            "image": crop_padded(image, start, size),
            "label": crop_padded(label, start, size),
            "case_id": case["id"],
            "valid_labels": case["valid_labels"],
            "center": [int(v) for v in center],
        }

    def _draw_case(self, rng: np.random.Generator, dataset: str | None) -> int:
        if dataset is None:
            return int(rng.choice(len(self.cases), p=self.probabilities))
        index, p = self._by_dataset[dataset]
        return int(index[rng.choice(len(index), p=p)])

    def _locations(self, case_id: str) -> dict[int, np.ndarray]:
        if case_id not in self._cache:
            self._cache[case_id] = load_locations(self.pool_dir, case_id)
        return self._cache[case_id]


def crop_padded(array: np.ndarray, start, size) -> np.ndarray:
    """``array[..., start:start+size]`` over the last three axes, zero-padded where outside."""
    spatial = array.shape[-3:]
    src, dst = [], []
    for s, n, dim in zip(start, size, spatial, strict=True):
        a, b = max(int(s), 0), min(int(s) + int(n), dim)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - int(s), a - int(s) + max(0, b - a)))
    out = np.zeros((*array.shape[:-3], *[int(n) for n in size]), dtype=array.dtype)
    out[(..., *dst)] = array[(..., *src)]
    return out
