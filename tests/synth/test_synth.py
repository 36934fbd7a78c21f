"""The synthetic phantoms: deterministic, realistic intensities, partly overlapping label sets."""

from __future__ import annotations

import json

import numpy as np

from medfoundry.io import read_image, read_label
from medfoundry.synth import write_synthetic_datasets


def test_same_seed_same_voxels_other_seed_other_voxels(tmp_path, synth_dir):
    write_synthetic_datasets(tmp_path / "a", cases=1, seed=7, progress=False)
    write_synthetic_datasets(tmp_path / "b", cases=1, seed=8, progress=False)
    rel = "Dataset901_SynthAbdomenCT/imagesTr/synthabdomenct_000_0000.nii.gz"
    a, ref, b = (read_image(p / rel).array for p in (tmp_path / "a", synth_dir, tmp_path / "b"))
    np.testing.assert_array_equal(a, ref)
    assert not np.array_equal(a, b)


def test_ct_intensities_are_hounsfield_like(synth_dir):
    root = synth_dir / "Dataset901_SynthAbdomenCT"
    img = read_image(root / "imagesTr" / "synthabdomenct_000_0000.nii.gz")
    lab = read_label(root / "labelsTr" / "synthabdomenct_000.nii.gz").array[0]
    x = img.array[0]
    assert x.min() < -900 and np.median(x[lab == 1]) > 60  # air outside, contrast-enhanced liver
    assert np.median(x[lab == 3]) > np.median(x[lab == 1])  # kidneys enhance more than liver
    assert img.spacing_mm[0] == 4.0 and img.spacing_mm[1] != 4.0  # anisotropic


def test_label_sets_overlap_only_in_part(synth_dir):
    ct = json.loads((synth_dir / "Dataset901_SynthAbdomenCT" / "dataset.json").read_text())[
        "labels"
    ]
    mr = json.loads((synth_dir / "Dataset902_SynthAbdomenMR" / "dataset.json").read_text())[
        "labels"
    ]
    shared = set(ct) & set(mr) - {"background"}
    assert shared == {"liver", "kidney"} and set(ct) != set(mr)
    for ds, n in (("Dataset901_SynthAbdomenCT", 4), ("Dataset902_SynthAbdomenMR", 3)):
        labels = set()
        for path in (synth_dir / ds / "labelsTr").glob("*.nii.gz"):
            labels |= set(np.unique(read_label(path).array).tolist())
        assert labels <= set(range(n + 1)) and {0, 1, 2} <= labels
