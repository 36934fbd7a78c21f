"""`medfoundry benchmark transfer` end to end on the real data, with a tiny budget."""

from __future__ import annotations

import csv

import pytest
import yaml

from medfoundry.cli.main import main

TINY = """
pretrain_steps: 4
pretrain_patch: [16, 32, 32]
ks: [1, 2]
full_epochs: 3
full_val_every: 3
head_warmup_fraction: 0.5
train:
  model: tsfm_test
  batch_size: 2
  iters_per_epoch: 2
  optim: {lr: 0.01}
  validation: {max_cases: 2}
directions:
  - name: acdc-to-hippocampus
    pool: [acdc]
    target: hippocampus
    target_patch: [16, 32, 32]
"""


@pytest.mark.slow
def test_transfer_table_on_real_data(data_dir, tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    out = tmp_path / "out"
    argv = [
        "-q",
        "benchmark",
        "transfer",
        "--data",
        str(data_dir),
        "-o",
        str(out),
        "--preset",
        str(preset),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "### acdc-to-hippocampus: pretrain on acdc, transfer to hippocampus" in printed
    d = out / "acdc-to-hippocampus"
    rows = list(csv.DictReader((d / "table.csv").read_text().splitlines()))
    assert [(r["run"], r["epochs"], r["steps"]) for r in rows] == [
        ("fine-tuned", "1", "2"),
        ("from scratch", "1", "2"),
        ("fine-tuned", "2", "4"),
        ("from scratch", "2", "4"),
        ("from scratch (full)", "3", "6"),
    ]
    assert {"hippocampus_anterior", "hippocampus_posterior", "mean"} <= set(rows[0])
    assert all(0 <= float(r["mean"]) <= 1 for r in rows)
    assert (d / "transfer.png").stat().st_size > 1000
    # Fine-tuned runs start from the pretrained weights; the same split is validated everywhere.
    assert (d / "finetune_k1" / "init.json").is_file() and not (
        d / "scratch_k1" / "init.json"
    ).exists()
    assert (d / "finetune_k1" / "splits.json").read_text() == (
        d / "scratch_k2" / "splits.json"
    ).read_text()
    # Only fine-tuning warms the head up, for the preset's share of its steps.
    warmups = {
        run: yaml.safe_load((d / run / "config.yaml").read_text())["head_warmup_steps"]
        for run in ("finetune_k1", "finetune_k2", "scratch_k2", "scratch_full")
    }
    assert warmups == {"finetune_k1": 1, "finetune_k2": 2, "scratch_k2": 0, "scratch_full": 0}
    # A rerun reuses every finished run.
    mtime = (d / "scratch_full" / "checkpoints" / "final.safetensors").stat().st_mtime
    assert main(argv) == 0
    assert (d / "scratch_full" / "checkpoints" / "final.safetensors").stat().st_mtime == mtime
