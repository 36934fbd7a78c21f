"""The main job's few-label comparison: largest-component postprocessing chosen per class on
validation (nnU-Net's rule), and the comparison table's means."""

from __future__ import annotations

import json

import numpy as np

from medfoundry.evaluation.evaluate import evaluate_folders
from medfoundry.io import Volume, read_label, write_volume
from medfoundry.workflows.fewlabel_eval import (
    choose_largest_component,
    comparison_rows,
    paired_wins,
    write_largest_components,
)


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(arr[None].astype(np.uint8), np.array([3.0, 1.0, 1.0])), path)


def _case(stray: bool, split_lesion: bool):
    """Reference: an organ (1) and a lesion in two pieces (2). Prediction: the organ, with a stray
    false-positive blob far away when ``stray``; the lesion in its two pieces."""
    ref = np.zeros((8, 40, 40), np.uint8)
    ref[2:6, 5:20, 5:20] = 1
    ref[2:6, 30:34, 30:34] = 2
    ref[2:6, 24:27, 2:5] = 2 if split_lesion else 0
    pred = ref.copy()
    if stray:
        pred[2:6, 34:38, 2:6] = 1
    return ref, pred


def test_largest_component_is_kept_only_where_it_helps(tmp_path):
    work = tmp_path / "w"
    for i, stray in enumerate((True, False)):
        ref, pred = _case(stray, split_lesion=True)
        _write(tmp_path / "refs" / f"c{i}.nii.gz", ref)
        _write(work / "predictions" / "finetune" / f"c{i}.nii.gz", pred)
        scratch = pred.copy()
        scratch[scratch == 2] = 0  # scratch misses the lesion
        _write(work / "predictions" / "scratch" / f"c{i}.nii.gz", scratch)
    preds = work / "predictions"
    write_largest_components(preds / "finetune", preds / "finetune_lcc")
    kept = read_label(preds / "finetune_lcc" / "c0.nii.gz").array[0]
    assert (kept == 1).sum() == 4 * 15 * 15 and (kept == 2).sum() == 4 * 4 * 4  # stray + piece gone
    ev = {
        n: evaluate_folders(
            preds / n, tmp_path / "refs", work / "evaluation" / n / "summary.json", progress=False
        )
        for n in ("finetune", "scratch", "finetune_lcc")
    }
    # The organ gains (its stray blob goes); the two-piece lesion loses a piece: only 1 is chosen.
    assert choose_largest_component(ev["finetune"], ev["finetune_lcc"]) == [1]
    (work / "postprocessing.json").write_text(json.dumps({"largest_component": [1]}))
    rows = comparison_rows(work, {1: "organ", 2: "lesion"})
    assert [r["class"] for r in rows] == ["organ (1)", "lesion (2)", "mean"]
    organ, lesion, mean = rows
    assert organ["finetune_post"] == organ["finetune_lcc"] == 1.0 > organ["finetune"]
    assert lesion["finetune_post"] == lesion["finetune"] == 1.0 > lesion["finetune_lcc"]
    assert lesion["scratch"] == 0.0
    assert mean["finetune_post"] == 1.0 and mean["scratch"] == (organ["scratch"] + 0.0) / 2
    assert paired_wins(work) == (2, 2)
