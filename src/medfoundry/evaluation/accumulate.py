"""Validation Dice gathered over many samples, per group (a pool dataset) and class (numpy only).

Two ways to combine samples, both with :func:`~medfoundry.evaluation.metrics.dice_score`'s convention
(a class absent from prediction and reference of a sample says nothing about it):

- ``pooled`` (patches during training): one Dice per (group, class) from the voxel counts summed over
  all samples, ``2 TP / (2 TP + FP + FN)`` (nnU-Net's "pseudo Dice"); a patch that misses a class
  costs nothing, a large structure weighs more;
- per case (whole volumes): the mean over cases of each case's Dice, as ``medfoundry evaluate``.

Summary keys: ``val/<group>/<class>``, ``val/<group>/mean`` (over classes) and ``val/mean`` (over groups).
The state is a plain dict, so the accumulators of several processes can be merged.
"""

from __future__ import annotations

import numpy as np

from medfoundry.evaluation.metrics import dice_score


class DiceAccumulator:
    def __init__(self, pooled: bool) -> None:
        self.pooled = pooled
        self.state: dict[str, dict[str, list[float]]] = {}
        """``{group: {class: [tp, fp, fn]}}`` when pooled, else ``{group: {class: [case Dice...]}}``."""

    def add(self, group: str, name: str, pred: np.ndarray, ref: np.ndarray) -> None:
        """One sample's boolean masks ``(Z, Y, X)`` of class ``name``."""
        slot = self.state.setdefault(group, {})
        if self.pooled:
            p, r = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
            tp = int(np.count_nonzero(p & r))
            counts = [tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp]
            slot[name] = [a + b for a, b in zip(slot.get(name, [0, 0, 0]), counts, strict=True)]
            return
        d = dice_score(pred, ref)
        if not np.isnan(d):
            slot.setdefault(name, []).append(d)

    def merge(self, states: list[dict]) -> None:
        """Add other accumulators' ``state`` (e.g. gathered from other processes) to this one."""
        for state in states:
            for group, classes in state.items():
                slot = self.state.setdefault(group, {})
                for name, values in classes.items():
                    if self.pooled:
                        old = slot.get(name, [0, 0, 0])
                        slot[name] = [a + b for a, b in zip(old, values, strict=True)]
                    else:
                        slot.setdefault(name, []).extend(values)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for group in sorted(self.state):
            scores = {n: self._score(v) for n, v in self.state[group].items()}
            scores = {n: s for n, s in scores.items() if s is not None}
            if not scores:
                continue
            out.update({f"val/{group}/{n}": round(s, 5) for n, s in scores.items()})
            out[f"val/{group}/mean"] = round(float(np.mean(list(scores.values()))), 5)
        group_means = [v for k, v in out.items() if k.endswith("/mean")]
        if group_means:
            out["val/mean"] = round(float(np.mean(group_means)), 5)
        return out

    def _score(self, values: list) -> float | None:
        if not self.pooled:
            return float(np.mean(values)) if values else None
        tp, fp, fn = values
        return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else None
