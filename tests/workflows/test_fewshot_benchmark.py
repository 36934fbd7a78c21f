"""`medfoundry benchmark fewshot` end to end on real data, with a tiny budget."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from medfoundry.cli.main import main

TINY = """
ns: [2, 0]
subsets: 2
max_subset_n: 2
starts: [scratch, supervised, ssl, both]
pretrain_steps: 4
pretrain_patch: [16, 32, 32]
steps: 3
val_max_cases: 3
recipes:
  default: []
  warmup: [head_warmup_steps=2]
train:
  model: tsfm_test
  batch_size: 2
  iters_per_epoch: 2
  threads: 1
  data: {num_workers: 0}
targets:
  - name: hippocampus
    pool: [brain_tumour]
    patch: [16, 32, 32]
"""


@pytest.mark.slow
def test_fewshot_table_on_real_data_then_a_rerun_keeps_every_run(data_dir, tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    out = tmp_path / "out"
    argv = ["-q", "benchmark", "fewshot", "--data", str(data_dir), "-o", str(out)]
    assert main([*argv, "--preset", str(preset)]) == 0
    assert (
        "### hippocampus: validation Dice against labelled training cases"
        in capsys.readouterr().out
    )
    d = out / "hippocampus"
    runs = list(csv.DictReader((d / "runs.csv").read_text().splitlines()))
    # n = 2: two subsets x (scratch + three pretrained starts x two recipes); n = all: one subset
    assert len(runs) == 21 and {r["start"] for r in runs} == {
        "scratch",
        "supervised",
        "ssl",
        "both",
    }
    assert {(r["start"], r["recipe"]) for r in runs if r["start"] == "ssl"} == {
        ("ssl", "default"),
        ("ssl", "warmup"),
    }
    assert {r["recipe"] for r in runs if r["start"] == "scratch"} == {"-"}
    assert all(r["steps"] == "3" for r in runs)  # the same steps for every start and n
    assert sorted({r["n"] for r in runs}, key=int) == ["2", "160"]  # all: 160 training cases
    warm = yaml.safe_load((d / "n2_s0" / "both.warmup" / "config.yaml").read_text())
    assert warm["head_warmup_steps"] == 2
    table = list(csv.DictReader((d / "table.csv").read_text().splitlines()))
    assert len(table) == 14 and all(0 <= float(r["mean"]) <= 1 for r in table)
    # The target's labels and validation cases stay out of pretraining.
    ssl_pool = json.loads((d / "pool_ssl" / "pool.json").read_text())
    assert ssl_pool["datasets"]["hippocampus"]["labelled"] is False
    val = {p.name.replace(".nii.gz", "") for p in (d / "val_references").iterdir()}
    pre_split = json.loads((d / "pretrain_ssl" / "splits.json").read_text())
    assert not {i.split("/")[1] for i in pre_split["train"]} & val
    ft = yaml.safe_load((d / "n2_s0" / "supervised" / "config.yaml").read_text())
    assert len(ft["data"]["train_cases"]) == 2 and not set(ft["data"]["train_cases"]) & {
        f"hippocampus/{v}" for v in val
    }
    assert (d / "fewshot.png").stat().st_size > 1000
    assert json.loads((d / "budget.json").read_text())["total_min"] >= 0
    mtime = (d / "n2_s1" / "both" / "checkpoints" / "final.safetensors").stat().st_mtime
    assert main([*argv, "--preset", str(preset)]) == 0  # a rerun keeps every finished run
    assert (d / "n2_s1" / "both" / "checkpoints" / "final.safetensors").stat().st_mtime == mtime


def test_an_unknown_target_is_a_one_line_error_before_any_folder(data_dir, tmp_path, capsys):
    preset = tmp_path / "tiny.yaml"
    preset.write_text(TINY)
    argv = ["benchmark", "fewshot", "--data", str(data_dir), "-o", str(tmp_path / "o")]
    assert main([*argv, "--preset", str(preset), "--target", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "medfoundry: error: --target ['nope']: not targets of the preset"
    assert not (tmp_path / "o").exists()


BRATS = """
ns: [2]
subsets: 1
starts: [scratch, supervised]
pretrain_steps: 2
pretrain_patch: [16, 32, 32]
steps: 2
val_max_cases: 1
train:
  model: tsfm_test
  batch_size: 1
  iters_per_epoch: 2
  threads: 1
  data: {num_workers: 0}
targets:
  - name: brats
    pool: [spinal_cord]
    channels: [0, 1]
    val_fraction: 0.34
    patch: [32, 64, 64]
    spacing: [3.0, 3.0, 3.0]
"""


@pytest.mark.slow
def test_brats_is_a_two_channel_target_and_the_one_channel_stem_adapts(data_dir, tmp_path):
    preset = tmp_path / "brats.yaml"
    preset.write_text(BRATS)
    out = tmp_path / "out"
    argv = ["-q", "benchmark", "fewshot", "--data", str(data_dir), "-o", str(out)]
    assert main([*argv, "--preset", str(preset)]) == 0
    d = out / "brats"
    plan = json.loads((d / "target" / "plan.json").read_text())
    assert plan["in_channels"] == 2
    assert plan["datasets"]["brats"]["target_spacing_mm"] == [3.0, 3.0, 3.0]
    # 6 cases: 2 fixed validation cases (FLAIR + T1c files each), 2 of the other 4 train.
    assert len(list((d / "val_images").glob("*_0001.nii.gz"))) == 1  # val_max_cases: 1
    init = json.loads((d / "n2_s0" / "supervised" / "init.json").read_text())
    assert init["adapted"] == ["stem.0.weight"]
    runs = list(csv.DictReader((d / "runs.csv").read_text().splitlines()))
    assert [r["n"] for r in runs] == ["2", "2"] and all(0 <= float(r["mean"]) <= 1 for r in runs)
