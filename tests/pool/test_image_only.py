"""Datasets without labels (what hospitals have most of): pooled as image-only cases for
self-supervised training, and left out of supervised batches."""

from __future__ import annotations

import json
import shutil

import pytest

from medfoundry import MedfoundryError
from medfoundry.cli.main import main
from medfoundry.pool import build_pool, load_pool
from medfoundry.tasks.segmentation import SegmentationTask
from tests.conftest import FAST_FIT, copy_hippo_cases

TINY = ["--model", "tsfm_test", *(x for kv in FAST_FIT for x in ("--set", kv))]


@pytest.fixture
def folders(hippo_dir, tmp_path):
    """``labelled/`` (MSD, 3 cases), ``msd_images/`` (MSD without labelsTr, 3 other cases) and
    ``plain/`` (a folder of images, no labels)."""
    copy_hippo_cases(hippo_dir, tmp_path / "all", n=9)
    names = sorted(p.name for p in (tmp_path / "all" / "imagesTr").iterdir())
    for folder, part in (("labelled", names[:3]), ("msd_images", names[3:6])):
        for sub in ("imagesTr", "labelsTr") if folder == "labelled" else ("imagesTr",):
            (tmp_path / folder / sub).mkdir(parents=True)
            for n in part:
                shutil.copy(tmp_path / "all" / sub / n, tmp_path / folder / sub / n)
        shutil.copy(tmp_path / "all" / "dataset.json", tmp_path / folder / "dataset.json")
    (tmp_path / "plain").mkdir()
    for n in names[6:]:
        shutil.copy(tmp_path / "all" / "imagesTr" / n, tmp_path / "plain" / n)
    return tmp_path


def _pool_yaml(tmp_path, body: str):
    (tmp_path / "pool.yaml").write_text("name: p\ndatasets:\n" + body)
    return tmp_path / "pool.yaml"


LABELLED = "  - name: hippo\n    root: labelled\n    modality: MRI\n"
IMAGES = (
    "  - name: unl_msd\n    root: msd_images\n    modality: MRI\n"
    "  - name: unl_plain\n    root: plain\n    images: '{case}.nii.gz'\n    modality: MRI\n"
)


def test_image_only_datasets_are_pooled_with_no_label(folders):
    pool = load_pool(
        build_pool(_pool_yaml(folders, LABELLED + IMAGES), folders / "p", progress=False)
    )
    by_dataset = {d: [c for c in pool["cases"] if c["dataset"] == d] for d in pool["datasets"]}
    assert {d: len(c) for d, c in by_dataset.items()} == {"hippo": 3, "unl_msd": 3, "unl_plain": 3}
    for name in ("unl_msd", "unl_plain"):
        assert pool["datasets"][name]["labelled"] is False
        assert all(c["label"] is None and c["valid_labels"] == [] for c in by_dataset[name])
    assert pool["datasets"]["hippo"]["labelled"] is True
    assert pool["labels"] == {"background": 0, "anterior": 1, "posterior": 2}  # hippo's only


def test_a_label_map_for_a_dataset_without_labels_is_an_error(folders):
    spec = _pool_yaml(folders, "  - name: u\n    root: msd_images\n    label_map: {1: x}\n")
    with pytest.raises(MedfoundryError, match="label_map is given but it has no label files"):
        build_pool(spec, folders / "p", progress=False)


def test_ssl_trains_on_image_only_data_and_supervised_training_says_why_not(folders, capsys):
    pool = folders / "p"
    assert main(["-q", "pool", "build", str(_pool_yaml(folders, IMAGES)), "-o", str(pool)]) == 0
    plan = ["-q", "plan", str(pool), "--model", "tsfm_test", "--patch", "16", "32", "32"]
    assert main(plan) == 0 and main(["-q", "preprocess", str(pool), "-j", "1"]) == 0
    run = folders / "ssl"
    assert main(["-q", "pretrain", str(pool), "-o", str(run), *TINY, "--objective", "ssl"]) == 0
    assert (run / "checkpoints" / "final.safetensors").is_file()
    capsys.readouterr()
    sup = folders / "sup"
    assert main(["-q", "pretrain", str(pool), "-o", str(sup), *TINY]) == 2
    assert "no labelled dataset: train it self-supervised" in capsys.readouterr().err
    assert not sup.exists()


def test_supervised_batches_never_draw_image_only_cases(folders):
    from medfoundry.data.augment_config import AugmentConfig
    from medfoundry.planning import make_plan
    from medfoundry.preprocessing import preprocess_pool
    from medfoundry.tasks import BatchSource, MaskedVolumeTask

    pool_dir = folders / "p"
    pool = load_pool(build_pool(_pool_yaml(folders, LABELLED + IMAGES), pool_dir, progress=False))
    make_plan(pool_dir, model="tsfm_test", patch_size_vox=[16, 32, 32], batch_size=2)
    preprocess_pool(pool_dir, progress=False)
    src = BatchSource(
        pool_dir, pool["cases"], [], [16, 32, 32], 2, 0, AugmentConfig(enabled=False), num_workers=0
    )
    seg = SegmentationTask(pool["labels"], "sigmoid").train_batches(src, 0, (0, 1))
    drawn = {cid.split("/")[0] for _ in range(20) for cid in next(seg)["case_ids"]}
    assert drawn == {"hippo"}
    ssl = MaskedVolumeTask(1, len(pool["labels"]) - 1).train_batches(src, 0, (0, 1))
    drawn = {cid.split("/")[0] for _ in range(20) for cid in next(ssl)["case_ids"]}
    assert drawn == {"hippo", "unl_msd", "unl_plain"}
    cached = json.loads(
        (
            pool_dir
            / "preprocessed"
            / "unl_plain"
            / f"{pool['cases'][-1]['id'].split('/')[1]}.json"
        ).read_text()
    )
    assert cached["classes_present"] == []


def test_images_only_keeps_a_labelled_dataset_s_labels_out(folders):
    body = "  - name: hippo\n    root: labelled\n    modality: MRI\n    images_only: true\n"
    pool = load_pool(build_pool(_pool_yaml(folders, body), folders / "p", progress=False))
    assert pool["datasets"]["hippo"]["labelled"] is False and pool["labels"] == {"background": 0}
    assert len(pool["cases"]) == 3 and all(c["label"] is None for c in pool["cases"])
    with pytest.raises(MedfoundryError, match="label_map is given but images_only uses no labels"):
        build_pool(
            _pool_yaml(folders, body + "    label_map: {1: a}\n"), folders / "q", progress=False
        )
    with pytest.raises(MedfoundryError, match="'images_only' must be true or false"):
        build_pool(
            _pool_yaml(folders, body.replace("true", "yes please")), folders / "r", progress=False
        )
