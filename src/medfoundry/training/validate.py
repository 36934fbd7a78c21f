"""Validation: sliding-window prediction of held-out preprocessed cases, Dice per dataset and class,
computed with :func:`medfoundry.evaluation.dice_score` exactly as ``medfoundry evaluate`` will."""

from __future__ import annotations

import numpy as np
import torch

from medfoundry.evaluation import dice_score
from medfoundry.inference.sliding_window import logits_to_labels, predict_sliding_window
from medfoundry.preprocessing.cache import load_case


def validate(
    model,
    pool_dir,
    cases: list[dict],
    labels: dict[str, int],
    patch_size,
    sigmoid: bool,
    amp: bool = False,
) -> dict[str, float]:
    """``{"val/<dataset>/<class>": Dice, "val/<dataset>/mean": ..., "val/mean": mean over datasets}``."""
    names = {i: n for n, i in labels.items()}
    per: dict[str, dict[str, list[float]]] = {}
    was_training = model.training
    model.eval()
    for case in cases:
        image, label, _ = load_case(pool_dir, case["id"])
        logits = predict_sliding_window(
            model, torch.from_numpy(np.array(image)), patch_size, amp=amp
        )
        pred = logits_to_labels(logits, case["valid_labels"], sigmoid)
        for cls in case["valid_labels"]:
            d = dice_score(pred == cls, np.asarray(label) == cls)
            if not np.isnan(d):
                per.setdefault(case["dataset"], {}).setdefault(names[cls], []).append(d)
    model.train(was_training)
    out: dict[str, float] = {}
    for ds, classes in per.items():
        means = {c: float(np.mean(v)) for c, v in classes.items()}
        out.update({f"val/{ds}/{c}": round(m, 5) for c, m in means.items()})
        out[f"val/{ds}/mean"] = round(float(np.mean(list(means.values()))), 5)
    ds_means = [v for k, v in out.items() if k.endswith("/mean")]
    if ds_means:
        out["val/mean"] = round(float(np.mean(ds_means)), 5)
    return out
