"""``review queue`` / ``review accept``: the scores by hand, the queue files, resume, the
evaluation, and corrected labels landing in a dataset and the pool it feeds (or refused whole)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from medfoundry import MedfoundryError
from medfoundry.cli.main import main
from medfoundry.io import read_image, read_label, write_volume
from medfoundry.planning import make_plan
from medfoundry.planning.plan import load_plan
from medfoundry.pool import build_pool, load_pool
from medfoundry.preprocessing import load_case, preprocess_pool
from medfoundry.runs.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from medfoundry.workflows.review import (
    DOUBT_ENTROPY_NATS,
    build_review_queue,
    consensus_labels,
    evaluate_queue,
    mean_pairwise_dice,
    rank_rows,
)
from medfoundry.workflows.review_accept import BACKUP_DIR, accept_corrections
from medfoundry.workflows.review_html import most_disagreeing_slice

QUEUE_CASES = 4  # hippocampus cases scored by the queue (none of them in the test dataset)
DATASET_CASES = 3


def test_consensus_is_the_majority_and_a_tie_goes_to_the_first_model():
    stack = np.array([[0, 1, 2, 1], [0, 2, 2, 0], [1, 2, 0, 2]], dtype=np.uint8)[:, None, None]
    labels, share = consensus_labels(stack)  # (M=3, 1, 1, 4) -> (1, 1, 4)
    assert labels.ravel().tolist() == [0, 2, 2, 1]  # last voxel: 1, 0, 2 tie -> model 0
    assert share.ravel() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 2 / 3])
    two, share2 = consensus_labels(stack[:2])
    assert two.ravel().tolist() == stack[0].ravel().tolist()
    assert share2.ravel().tolist() == [0.0, 0.5, 0.0, 0.5]


def test_mean_pairwise_dice_by_hand():
    a = np.array([1, 1, 2, 0, 0, 0])
    b = np.array([1, 0, 2, 2, 0, 0])
    c = np.zeros(6, dtype=int)
    stack = np.stack([a, b])[:, None, None]
    # class 1: 2*1/(2+1) = 2/3; class 2: 2*1/(1+2) = 2/3
    assert mean_pairwise_dice(stack, [1, 2]) == pytest.approx(2 / 3)
    # pairs (a,b) 2/3, (a,c) 0 (both classes one-sided), (b,c) 0
    assert mean_pairwise_dice(np.stack([a, b, c])[:, None, None], [1, 2]) == pytest.approx(2 / 9)
    assert mean_pairwise_dice(np.stack([c, c])[:, None, None], [1, 2]) == 1.0  # nothing to doubt


def test_slice_with_most_disagreement():
    d = np.zeros((4, 2, 2))
    d[2, 0, 0], d[1] = 0.9, 0.3  # 0.9 < 4 * 0.3
    assert most_disagreeing_slice(d, np.zeros((4, 2, 2))) == 1
    lab = np.zeros((4, 2, 2))
    lab[3] = 1
    assert most_disagreeing_slice(np.zeros((4, 2, 2)), lab) == 3


def test_evaluation_by_hand():
    dice = [0.9, 0.5, 0.8, 0.7, 0.6, 0.95, 0.85, 0.4]
    score = [0.1, 0.6, 0.3, 0.2, 0.25, 0.05, 0.4, 0.7]
    rows = rank_rows(
        [
            {"case": f"c{i}", "score": s, "score_name": "x", "dice": d}
            for i, (s, d) in enumerate(zip(score, dice, strict=True))
        ]
    )
    assert [r["rank"] for r in rows] == list(range(1, 9)) and rows[0]["case"] == "c7"
    ev = evaluate_queue(rows)
    assert ev["spearman_rho"] == pytest.approx(stats.spearmanr(score, dice)[0], abs=1e-4)
    # top quarter (2): c7 (0.4), c1 (0.5); lowest two Dice: c7, c1 -> 2 hits; chance 2 * 2 / 8
    assert (ev["top_quarter"], ev["top_quarter_hits"], ev["chance_hits"]) == (2, 2, 0.5)


# ----- on real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases(hippo_dir, tmp_path_factory):
    """Images and references of QUEUE_CASES hippocampus cases, and DATASET_CASES others."""
    names = sorted(p.name for p in (hippo_dir / "labelsTr").glob("*.nii.gz"))
    tmp = tmp_path_factory.mktemp("review_cases")
    for sub in ("images", "labels"):
        (tmp / sub).mkdir()
    for n in names[:QUEUE_CASES]:
        shutil.copy(hippo_dir / "imagesTr" / n, tmp / "images" / n)
        shutil.copy(hippo_dir / "labelsTr" / n, tmp / "labels" / n)
    return tmp, [
        n.removesuffix(".nii.gz") for n in names[QUEUE_CASES : QUEUE_CASES + DATASET_CASES]
    ]


@pytest.fixture(scope="module")
def second_model(pretrained, tmp_path_factory):
    """A different checkpoint: the pretrained weights with seeded noise (a stand-in for a fold)."""
    ckpt = load_checkpoint(resolve_checkpoint(pretrained))
    g = torch.Generator().manual_seed(0)
    weights = {
        k: v + 0.2 * v.std().nan_to_num() * torch.randn(v.shape, generator=g)
        if v.is_floating_point()
        else v
        for k, v in ckpt.weights.items()
    }
    path = tmp_path_factory.mktemp("second") / "model.safetensors"
    return save_checkpoint(path, {**ckpt.description(), "kind": "model"}, weights)


@pytest.fixture(scope="module")
def two_model_queue(pretrained, second_model, cases, tmp_path_factory):
    folder, _ = cases
    out = tmp_path_factory.mktemp("queue2") / "q"
    r = build_review_queue(
        [pretrained, second_model],
        folder / "images",
        out,
        folder / "labels",
        dataset="hippocampus",
        progress=False,
    )
    return out, r


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.real_data
def test_two_model_queue_files_and_scores(two_model_queue, cases):
    out, r = two_model_queue
    rows = _csv(out / "queue.csv")
    assert [int(x["rank"]) for x in rows] == list(range(1, QUEUE_CASES + 1))
    scores = [float(x["score"]) for x in rows]
    assert scores == sorted(scores, reverse=True)
    for x in rows:
        case = x["case"]
        image = read_image(cases[0] / "images" / f"{case}.nii.gz")
        pred = read_label(out / x["prediction"])
        m0, m1 = (read_label(out / p).array[0] for p in x["model_predictions"].split(";"))
        dmap = read_image(out / x["disagreement"])
        assert pred.same_geometry(image) and dmap.same_geometry(image)
        assert np.array_equal(pred.array[0], m0)  # two models: the consensus is the first's
        assert np.array_equal(dmap.array[0] > 0, m0 != m1)
        assert set(np.unique(dmap.array).tolist()) <= {0.0, 0.5}
        want = mean_pairwise_dice(np.stack([m0, m1]), [1, 2])
        assert float(x["score"]) == pytest.approx(1 - want, abs=1e-5)
        assert int(x["n_models"]) == 2 and x["score_name"] == "model_disagreement"
        assert int(x["disagreeing_voxels"]) == int((m0 != m1).sum())
        assert (out / x["png"]).read_bytes()[:4] == b"\x89PNG"
        ref = read_label(cases[0] / "labels" / f"{case}.nii.gz").array[0]
        hand = np.mean(
            [
                2 * ((m0 == i) & (ref == i)).sum() / ((m0 == i).sum() + (ref == i).sum())
                for i in (1, 2)
            ]
        )
        assert float(x["dice"]) == pytest.approx(hand, abs=1e-4)
    page = (out / "queue.html").read_text()
    positions = [page.index(f"alt='{x['case']}'") for x in rows]
    assert positions == sorted(positions)  # rank order
    ev = json.loads((out / "evaluation.json").read_text())
    score, dice = [float(x["score"]) for x in rows], [float(x["dice"]) for x in rows]
    rho = stats.spearmanr(score, dice)[0]
    assert ev["cases"] == QUEUE_CASES and ev["top_quarter"] == 1
    assert ev["spearman_rho"] == (None if math.isnan(rho) else pytest.approx(rho, abs=1e-4))
    assert ev["top_quarter_hits"] == int(int(np.argmin(dice)) == 0)
    assert ev["chance_hits"] == pytest.approx(1 / QUEUE_CASES, abs=0.01)


@pytest.mark.real_data
def test_a_rerun_keeps_finished_cases_and_redoes_a_damaged_one(
    pretrained, second_model, two_model_queue, cases, tmp_path
):
    out = tmp_path / "q"
    shutil.copytree(two_model_queue[0], out)
    first = sorted((out / "cases").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in first}
    (out / "png" / first[0].name.replace(".json", ".png")).write_bytes(b"")  # damaged
    build_review_queue(
        [pretrained, second_model], cases[0] / "images", out, dataset="hippocampus", progress=False
    )
    after = {p.name: p.stat().st_mtime_ns for p in sorted((out / "cases").glob("*.json"))}
    assert [n for n in before if before[n] != after[n]] == [first[0].name]
    assert "dice" not in _csv(out / "queue.csv")[0]  # no --labels this time
    assert not (out / "evaluation.json").exists()


@pytest.mark.real_data
def test_one_model_queue_ranks_by_tta_entropy_through_the_cli(pretrained, cases, tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "q1"
    images.mkdir()
    for p in sorted((cases[0] / "images").iterdir())[:1]:  # 8 mirrored passes: one case
        shutil.copy(p, images / p.name)
    argv = ["-q", "review", "queue", "-m", str(pretrained), "-i", str(images), "-o", str(out)]
    argv += ["--dataset", "hippocampus", "--labels", str(cases[0] / "labels")]
    assert main(argv) == 0
    assert "test-time mirroring" in capsys.readouterr().out
    rows = _csv(out / "queue.csv")
    for x in rows:
        assert x["score_name"] == "mean_entropy_fg" and x["score"] == x["mean_entropy_fg"]
        entropy = read_image(out / x["disagreement"]).array[0]
        assert int(x["disagreeing_voxels"]) == int((entropy >= DOUBT_ENTROPY_NATS).sum())
        assert x["model_predictions"] == ""
    ev = json.loads((out / "evaluation.json").read_text())
    assert [s["score"] for s in ev["other_scores"]] == [
        "mean_entropy_fg",
        "mean_entropy",
        "tta_disagreement",
    ]


@pytest.mark.real_data
def test_models_of_other_classes_are_refused(pretrained, cases, tmp_path, monkeypatch):
    from medfoundry.workflows import review

    real, datasets = review.Predictor.from_checkpoint, iter(["hippocampus", "acdc"])
    monkeypatch.setattr(
        review.Predictor,
        "from_checkpoint",
        lambda model, device, dataset=None: real(model, device, dataset=next(datasets)),
    )
    with pytest.raises(MedfoundryError, match="share their classes"):
        build_review_queue([pretrained, pretrained], cases[0] / "images", tmp_path, progress=False)


# ----- accepting corrections ---------------------------------------------------------------------

POOL_YAML = """
name: review-pool
datasets:
  - name: hippocampus
    root: {root}
    modality: MRI
    label_map: {{1: hippocampus_anterior, 2: hippocampus_posterior}}
"""


@pytest.fixture
def dataset_and_pool(cases, hippo_dir, tmp_path):
    """An nnU-Net v2 dataset of DATASET_CASES hippocampus cases and a preprocessed pool over it."""
    root = tmp_path / "Dataset001_Hippo"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for c in cases[1]:
        shutil.copy(hippo_dir / "imagesTr" / f"{c}.nii.gz", root / "imagesTr" / f"{c}_0000.nii.gz")
        shutil.copy(hippo_dir / "labelsTr" / f"{c}.nii.gz", root / "labelsTr" / f"{c}.nii.gz")
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "anterior": 1, "posterior": 2},
        "numTraining": DATASET_CASES,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    (tmp_path / "pool.yaml").write_text(POOL_YAML.format(root=root))
    pool = tmp_path / "pool"
    build_pool(tmp_path / "pool.yaml", pool, progress=False)
    make_plan(pool, model="tsfm_test", patch_size_vox=[16, 32, 32], batch_size=2)
    preprocess_pool(pool, progress=False)
    return root, pool


def _merge_posterior(src, dst):
    """A 'corrected' label: class 2 relabelled 1."""
    lab = read_label(src)
    arr = lab.array.copy()
    arr[arr == 2] = 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_volume(lab.with_array(arr), dst)
    return arr[0]


@pytest.mark.real_data
def test_accepted_label_lands_in_the_dataset_and_the_pool_serves_it(
    two_model_queue, cases, dataset_and_pool, tmp_path, capsys
):
    root, pool = dataset_and_pool
    queue = tmp_path / "queue"
    shutil.copytree(two_model_queue[0], queue)
    old_case = sorted((root / "labelsTr").iterdir())[0].name.removesuffix(".nii.gz")
    new_case = _csv(queue / "queue.csv")[0]["case"]  # scored by the queue, not in the dataset
    original = (root / "labelsTr" / f"{old_case}.nii.gz").read_bytes()
    assert 2 in load_case(pool, f"hippocampus/{old_case}")[1]
    untouched = sorted((pool / "preprocessed" / "hippocampus").glob("*.image.npy"))[-1]
    kept = untouched.stat().st_mtime_ns
    fixed = tmp_path / "fixed"
    want_old = _merge_posterior(
        root / "labelsTr" / f"{old_case}.nii.gz", fixed / f"{old_case}.nii.gz"
    )
    refs = cases[0] / "labels"
    want_new = _merge_posterior(refs / f"{new_case}.nii.gz", fixed / f"{new_case}.nii.gz")
    argv = ["-q", "review", "accept", "--queue", str(queue), "--corrected", str(fixed)]
    assert main([*argv, "--dataset", str(root), "--pool", str(pool)]) == 0
    assert "accepted 2 corrected label(s)" in capsys.readouterr().out

    assert np.array_equal(read_label(root / "labelsTr" / f"{old_case}.nii.gz").array[0], want_old)
    assert np.array_equal(read_label(root / "labelsTr" / f"{new_case}.nii.gz").array[0], want_new)
    backups = list((root / BACKUP_DIR).rglob("*.nii.gz"))
    assert [b.name for b in backups] == [f"{old_case}.nii.gz"] and backups[
        0
    ].read_bytes() == original
    assert (root / "imagesTr" / f"{new_case}_0000.nii.gz").is_file()
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == DATASET_CASES + 1
    rows = {r["case"]: r for r in _csv(queue / "accepted.csv")}
    assert rows[old_case]["action"] == "replaced" and rows[new_case]["action"] == "added"
    assert rows[new_case]["image_added"] == "True" and rows[old_case]["pool"] == str(pool)

    p = load_pool(pool)
    by_id = {c["id"]: c for c in p["cases"]}
    assert by_id[f"hippocampus/{old_case}"]["label_values"] == [0, 1]
    assert (
        f"hippocampus/{new_case}" in by_id
        and p["datasets"]["hippocampus"]["num_cases"] == DATASET_CASES + 1
    )
    assert sum(c["sampling_probability"] for c in p["cases"]) == pytest.approx(1.0)
    for case in (old_case, new_case):  # what training reads now: the corrected maps
        _, label, props = load_case(pool, f"hippocampus/{case}")
        assert props["classes_present"] == [1] and 2 not in np.asarray(label)
    manifest = json.loads((pool / "preprocessed" / "manifest.json").read_text())
    assert f"hippocampus/{new_case}" in manifest["cases"]
    assert load_plan(pool)["pool_sha256"]  # the kept plan belongs to the updated pool.json
    assert untouched.stat().st_mtime_ns == kept  # other cached cases were not made again
    assert preprocess_pool(pool, progress=False)["done"] == 0


def _wrong_geometry(lab):
    return lab.with_array(lab.array[:, :-1].copy())


def _out_of_range(lab):
    arr = lab.array.copy()
    arr[0, 0, 0, 0] = 3
    return lab.with_array(arr)


def _not_integer(lab):
    return lab.with_array(lab.array.astype(np.float32) * 0.5)


@pytest.mark.real_data
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_wrong_geometry, "differs from its image"),
        (_out_of_range, r"label values \[3\]"),
        (_not_integer, "non-integer"),
    ],
    ids=["geometry", "out-of-range", "non-integer"],
)
def test_a_bad_corrected_file_is_refused_and_nothing_written(
    damage, message, two_model_queue, dataset_and_pool, tmp_path
):
    root, pool = dataset_and_pool
    queue = tmp_path / "queue"
    shutil.copytree(two_model_queue[0], queue)
    labels = sorted((root / "labelsTr").iterdir())
    fixed = tmp_path / "fixed"
    _merge_posterior(labels[0], fixed / labels[0].name)  # a good one beside the bad one
    write_volume(damage(read_label(labels[1])), fixed / labels[1].name)
    state = {p: p.read_bytes() for p in [*labels, root / "dataset.json", pool / "pool.json"]}
    with pytest.raises(MedfoundryError, match=message) as err:
        accept_corrections(queue, fixed, root, pool, progress=False)
    assert labels[1].name in str(err.value) and "\n" not in str(err.value)
    assert {p: p.read_bytes() for p in state} == state
    assert not (root / BACKUP_DIR).exists() and not (queue / "accepted.csv").exists()
