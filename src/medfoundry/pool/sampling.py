"""Case sampling rules: how often pooled training draws each case.

``inv_sqrt`` (TSFM / MultiTalent default): a case of dataset ``d`` with ``N_d`` cases is drawn with
probability proportional to ``1 / sqrt(N_d)``, so dataset ``d`` as a whole gets a share proportional to
``sqrt(N_d)``: large datasets still dominate, but less than in proportion to their size.
``uniform``: every case equally likely (dataset share proportional to ``N_d``).
``dataset_equal``: every dataset the same share, split evenly over its cases.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

RuleFn = Callable[[int], float]
"""A rule maps the size ``N_d`` of a case's dataset to that case's unnormalised weight."""

SAMPLING_RULES: dict[str, RuleFn] = {
    "inv_sqrt": lambda n: 1.0 / math.sqrt(n),
    "uniform": lambda n: 1.0,
    "dataset_equal": lambda n: 1.0 / n,
}


def sampling_probabilities(case_datasets: list[str], rule: str = "inv_sqrt") -> list[float]:
    """Per-case probabilities (summing to 1) for cases whose datasets are ``case_datasets``."""
    if rule not in SAMPLING_RULES:
        raise ValueError(
            f"unknown sampling rule '{rule}' (choose from {', '.join(SAMPLING_RULES)})"
        )
    sizes = Counter(case_datasets)
    weights = [SAMPLING_RULES[rule](sizes[d]) for d in case_datasets]
    total = sum(weights)
    return [w / total for w in weights]
