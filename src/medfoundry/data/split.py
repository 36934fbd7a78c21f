"""Train / validation split per dataset, deterministic by seed, grouped so related cases stay together."""

from __future__ import annotations

import re

import numpy as np

DEFAULT_GROUP_REGEX = r"^(?P<group>.+?)(_frame\d+)?$"
"""Cases whose names give the same ``group`` stay in one split (ACDC: both frames of a patient)."""


def split_cases(
    cases: list[dict], val_fraction: float, seed: int, group_regex: str = DEFAULT_GROUP_REGEX
) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` case ids: per dataset, ``val_fraction`` of its groups (at least
    one when the dataset has two or more groups) go to validation."""
    pattern = re.compile(group_regex)
    out: dict[str, list[str]] = {"train": [], "val": []}
    for dataset in sorted({c["dataset"] for c in cases}):
        ids = [c["id"] for c in cases if c["dataset"] == dataset]
        groups: dict[str, list[str]] = {}
        for cid in ids:
            m = pattern.match(cid.split("/", 1)[1])
            groups.setdefault(m.group("group") if m else cid, []).append(cid)
        keys = sorted(groups)
        rng = np.random.default_rng([seed, *dataset.encode()])
        rng.shuffle(keys)
        n_val = int(round(val_fraction * len(keys)))
        if val_fraction > 0 and len(keys) > 1:
            n_val = min(max(n_val, 1), len(keys) - 1)
        val = set(keys[:n_val])
        for k in sorted(groups):
            out["val" if k in val else "train"].extend(groups[k])
    return out


def fixed_split(
    cases: list[dict], val_fraction: float, seed: int, max_val: int
) -> tuple[list[str], list[str]]:
    """A target's training case ids and its fixed validation case ids (the seeded
    :func:`split_cases`, at most ``max_val`` of them) for few-label experiments."""
    split = split_cases(cases, val_fraction, seed)
    return split["train"], split["val"][:max_val]


def labelled_subset(ids: list[str], n: int, seed: int) -> list[str]:
    """``n`` of ``ids`` drawn with ``seed`` (all of them for 0 or ``n >= len``), in their order."""
    if n == 0 or n >= len(ids):
        return list(ids)
    chosen = set(np.random.default_rng([seed, n]).choice(len(ids), n, replace=False).tolist())
    return [i for k, i in enumerate(ids) if k in chosen]
