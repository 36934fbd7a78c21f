"""``benchmark uncertainty``: files, resume, and the ranking table by hand."""

from __future__ import annotations

import shutil

import pytest

from medfoundry.workflows.uncertainty import (
    predict_uncertainty_files,
    rank_table,
    run_uncertainty_benchmark,
)


def test_rank_table_by_hand():
    rows = [
        {
            "case": str(i),
            "dice": d,
            "mean_entropy_fg": 1 - d,
            "mean_entropy": d,
            "tta_disagreement": 0.5,
        }
        for i, d in enumerate([0.9, 0.5, 0.8, 0.7, 0.6, 0.95, 0.85, 0.4])
    ]
    table = {r["score"]: r for r in rank_table(rows)}
    assert table["mean_entropy_fg"]["spearman"] == pytest.approx(-1.0)
    assert table["mean_entropy_fg"]["worst_quarter_hits"] == "2/2"  # 0.4 and 0.5
    assert table["mean_entropy"]["spearman"] == pytest.approx(1.0)
    assert table["mean_entropy"]["worst_quarter_hits"] == "0/2"
    assert table["mean_entropy_fg"]["chance_hits"] == pytest.approx(0.5)
    assert table["tta_disagreement"]["spearman"] != table["tta_disagreement"]["spearman"]  # NaN


@pytest.mark.real_data
def test_benchmark_writes_its_files_and_resumes(pretrained, hippo_dir, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for p in sorted((hippo_dir / "labelsTr").glob("*.nii.gz"))[:4]:
        shutil.copy(p, labels / p.name)
        shutil.copy(hippo_dir / "imagesTr" / p.name, images / p.name)
    out = tmp_path / "out"
    r = run_uncertainty_benchmark(
        pretrained, images, labels, out, dataset="hippocampus", progress=False
    )
    assert r["cases"] == 4 and [t["score"] for t in r["table"]][0] == "mean_entropy_fg"
    for name in ("cases.csv", "table.md", "table.csv", "uncertainty.png"):
        assert (out / name).stat().st_size > 0
    maps = sorted((out / "maps").glob("*_entropy.nii.gz"))
    assert len(maps) == 4
    before = [p.stat().st_mtime_ns for p in sorted((out / "cases").glob("*.json"))]
    run_uncertainty_benchmark(
        pretrained, images, labels, out, dataset="hippocampus", progress=False
    )
    assert [p.stat().st_mtime_ns for p in sorted((out / "cases").glob("*.json"))] == before
    rows = predict_uncertainty_files(
        pretrained,
        images / maps[0].name.replace("_entropy", ""),
        tmp_path / "one",
        dataset="hippocampus",
        progress=False,
    )
    assert len(rows) == 1 and (tmp_path / "one" / "scores.csv").is_file()
