"""The main job's HTML report reads as tables, not Python reprs."""

from __future__ import annotations

from medfoundry.workflows.report import write_report


def test_timings_are_a_table_with_a_total_not_a_dict(tmp_path):
    summary = {
        "held-out target": "hippocampus",
        "fine-tuned final validation mean Dice": 0.81234,
        "timings_s": {"pool_build_s": 0.3, "pretrain_s": 288.1, "finetune_s": 126.2},
    }
    dice = {"mean": {}, "num_cases": 0, "tolerance_mm": 1.0}
    sections = {"summary": summary, "transfer": [], "dice": dice, "class_names": {}, "overlays": []}
    text = write_report(tmp_path, "t", sections).read_text()
    assert "{'" not in text and "timings_s" not in text
    assert "<tr><th>pretrain</th><td>288.1</td><td>4.8</td></tr>" in text
    assert "<tr><th>pool build</th><td>0.3</td><td>0.0</td></tr>" in text
    assert "<tr><th>total</th><td>414.6</td><td>6.9</td></tr>" in text
    assert "<td>0.812</td>" in text
