"""Classification sources: MedMNIST .npz (real files) and folder + CSV, and the prepared pool."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.data.classification import (
    available_splits,
    load_pool_arrays,
    normalize,
    prepare_pool,
    read_split,
)
from medfoundry.planning import load_plan
from medfoundry.pool import load_pool


@pytest.fixture(scope="module")
def medmnist(data_dir):
    return data_dir / "medmnist"


def test_pneumoniamnist_is_a_one_slice_volume_with_the_official_split_sizes(medmnist):
    path = medmnist / "pneumoniamnist.npz"
    train, val = read_split(path, "train"), read_split(path, "val")
    assert train.images.shape == (4708, 1, 1, 28, 28)  # (N, C, Z, Y, X)
    assert np.bincount(train.labels).tolist() == [1214, 3494]
    assert np.bincount(val.labels).tolist() == [135, 389]
    assert train.classes == ["normal", "pneumonia"] and not train.multilabel
    assert available_splits(path) == ["train", "val"]
    with pytest.raises(MedfoundryError, match="no 'test' split"):
        read_split(path, "test")  # the kept-out split is not in these files


def test_adrenal_3d(medmnist):
    part = read_split(medmnist / "adrenalmnist3d.npz", "val")
    assert part.images.shape == (98, 1, 28, 28, 28)
    assert set(np.unique(part.images)) <= {0, 255}  # shape masks
    assert part.classes == ["normal", "hyperplasia"]


def test_prepare_pool_keeps_the_official_split_and_never_reads_test(tmp_path, medmnist):
    npz = tmp_path / "adrenalmnist3d_small.npz"
    with np.load(medmnist / "adrenalmnist3d.npz") as f:
        arrays = {k: f[k][:40] for k in f.files}
    arrays["test_images"] = np.full((5, 28, 28, 28), 7, np.uint8)  # must not reach the pool
    arrays["test_labels"] = np.ones((5, 1), np.uint8)
    np.savez(npz, **arrays)
    pool_dir = prepare_pool(npz, tmp_path / "pool")
    pool, plan = load_pool(pool_dir), load_plan(pool_dir)
    assert [c["split"] for c in pool["cases"]].count("val") == 40
    assert len(pool["cases"]) == 80 and pool["labels"] == {"normal": 0, "hyperplasia": 1}
    images, labels = load_pool_arrays(pool_dir)
    assert images.shape == (80, 1, 28, 28, 28) and not (images == 7).all(axis=(1, 2, 3, 4)).any()
    assert plan["patch_size_vox"] == [28, 28, 28] and plan["in_channels"] == 1
    assert plan["stages"][1]["stride"] == [2, 2, 2]
    x = normalize(np.asarray(images[:40]), plan["intensity"])
    assert abs(float(x.mean())) < 1e-3 and float(x.std()) == pytest.approx(1.0, abs=1e-3)


def test_rgb_and_multilabel_npz(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "chestlike.npz",
        train_images=rng.integers(0, 255, (6, 28, 28, 3), dtype=np.uint8),
        train_labels=rng.integers(0, 2, (6, 4)).astype(np.uint8),
    )
    part = read_split(tmp_path / "chestlike.npz", "train")
    assert part.images.shape == (6, 3, 1, 28, 28) and part.multilabel
    assert part.labels.shape == (6, 4) and part.classes == [f"class_{i}" for i in range(4)]


def test_folder_with_csv_nifti_and_png(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    rows = ["case,label,split"]
    for i in range(6):
        a = np.full((10, 12, 14), float(i), np.float32)
        nib.save(
            nib.Nifti1Image(a.T, np.diag([0.8, 0.8, 2.0, 1])), tmp_path / "images" / f"c{i}.nii.gz"
        )
        rows.append(f"c{i},{'tumour' if i % 2 else 'normal'},{'val' if i >= 4 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    train = read_split(tmp_path, "train")
    assert train.images.shape == (4, 1, 10, 12, 14) and train.classes == ["normal", "tumour"]
    assert train.labels.tolist() == [0, 1, 0, 1]
    assert train.spacing_mm == pytest.approx([2.0, 0.8, 0.8])
    val = read_split(tmp_path, "val", [5, 6, 7])  # resampled to a model's shape
    assert val.images.shape == (2, 1, 5, 6, 7) and float(val.images[1].mean()) == pytest.approx(5)
    png = tmp_path / "png"
    png.mkdir()
    Image.fromarray(np.zeros((20, 16), np.uint8)).save(png / "a.png")
    Image.fromarray(np.full((20, 16), 200, np.uint8)).save(png / "b.png")
    (png / "cases.csv").write_text("case,label\na,x;y\nb,y\n")
    ml = read_split(png, "train")
    assert ml.multilabel and ml.labels.tolist() == [[1, 1], [0, 1]]
    assert ml.images.shape == (2, 1, 1, 20, 16)
    (png / "cases.csv").write_text("case,label\na,x\nzzz,y\n")
    with pytest.raises(MedfoundryError, match="no image file for case 'zzz'"):
        read_split(png, "train")


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(MedfoundryError, match="not a MedMNIST"):
        read_split(tmp_path / "missing.npz", "train")
    (tmp_path / "a.csv").write_text("id,diagnosis\n1,x\n")
    with pytest.raises(MedfoundryError, match="'case' and 'label'"):
        read_split(tmp_path, "train")
