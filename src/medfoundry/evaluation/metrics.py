"""Pure metric functions on boolean masks (numpy + io only).

Conventions: Dice of an empty reference *and* an empty prediction is undefined (NaN) and left out of
means; an empty reference with a non-empty prediction (or the reverse) scores 0.
"""

from __future__ import annotations

import numpy as np


def dice_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice ``2|P & R| / (|P| + |R|)`` of two boolean masks of one shape; NaN when both are empty."""
    p, r = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    denom = int(p.sum()) + int(r.sum())
    if denom == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(p, r).sum()) / denom
