"""The main job's few-label comparison, scored as a user would score it.

Both runs on the target (fine-tuned from the pretrained model, and the same training from random
weights) predict the target's fixed validation images with their final weights (equal steps), and
``medfoundry evaluate`` scores the label maps at the input grid. Keeping each class's largest
connected component (nnU-Net's postprocessing) is then decided per class on the same validation
cases, as nnU-Net decides it on its cross-validation: the fine-tuned model's figures with it are
therefore optimistic, and the pretrained-vs-scratch comparison uses the raw label maps.

Folders: ``predictions/<run>/`` and ``evaluation/<run>/summary.json`` (+ ``per_case.csv``) for
``finetune``, ``scratch`` and ``finetune_lcc`` (every class's largest component kept);
``postprocessing.json`` holds the classes chosen for it.
"""

from __future__ import annotations

from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.inference.postprocess import keep_largest_component
from medfoundry.io import read_label, write_volume
from medfoundry.runs.checkpoint import find_checkpoint
from medfoundry.utils.jsonfile import read_json, write_json

RUNS = ("finetune", "scratch")
LCC = "finetune_lcc"


def link_validation(cases: list[dict], images: Path, refs: Path) -> None:
    """Links to the cases' files: ``images/<case>.<ext>`` (``<case>_0000.<ext>``, ``_0001``... for
    several channels, as nnU-Net names them) and ``refs/<case>.<ext>`` (the label)."""
    images.mkdir(parents=True, exist_ok=True)
    refs.mkdir(parents=True, exist_ok=True)
    for case in cases:
        name = case["id"].split("/", 1)[1]
        many = len(case["images"]) > 1
        for i, img in enumerate(case["images"]):
            _link(img, images / f"{name}{f'_{i:04d}' if many else ''}{label_suffix(img)}")
        _link(case["label"], refs / f"{name}{label_suffix(case['label'])}")


def label_suffix(path: str) -> str:
    """The file's image extension (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``)."""
    return next(
        (s for s in (".nii.gz", ".nii", ".nrrd", ".mha") if str(path).endswith(s)), ".nii.gz"
    )


def _link(src: str, dst: Path) -> None:
    if not dst.exists():
        dst.symlink_to(Path(src).resolve())


def predict_runs(work: Path, images: Path, progress: bool) -> None:
    """Each run's final weights on ``images`` -> ``predictions/<run>/`` (no mirroring: the
    comparison is between starts, and mirroring costs 8 forward passes per tile on a CPU)."""
    from medfoundry.inference.predict_files import predict_paths
    from medfoundry.inference.predictor import Predictor

    for run in RUNS:
        predictor = Predictor.from_checkpoint(
            find_checkpoint(work / run, "final"), "cpu", mirror=False
        )
        out = predict_paths(predictor, images, work / "predictions" / run, progress=progress)
        if out["failed"]:
            raise MedfoundryError(f"{run}: prediction failed for {sorted(out['failed'])}")


def evaluate_runs(work: Path, refs: Path, jobs: int, progress: bool) -> dict[str, dict]:
    """Score ``finetune``, ``scratch`` and ``finetune_lcc`` against ``refs``; choose the classes
    whose largest component is kept (``postprocessing.json``); returns ``{name: summary}``."""
    from medfoundry.evaluation.evaluate import evaluate_folders

    preds = work / "predictions"
    write_largest_components(preds / "finetune", preds / LCC)
    out = {}
    for name in (*RUNS, LCC):
        out[name] = evaluate_folders(
            preds / name,
            refs,
            work / "evaluation" / name / "summary.json",
            jobs=jobs,
            progress=progress,
        )
    chosen = choose_largest_component(out["finetune"], out[LCC])
    write_json(work / "postprocessing.json", {"largest_component": chosen})
    return out


def write_largest_components(src: Path, dst: Path) -> None:
    """Every label map of ``src`` with each class's largest 26-connected component kept, in ``dst``
    (same names and geometry; kept when already written)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.nii.gz")):
        if (dst / path.name).exists():
            continue
        vol = read_label(path)  # (1, Z, Y, X)
        ids = [int(v) for v in set(vol.array.ravel().tolist()) if v]
        vol.array = keep_largest_component(vol.array[0], ids)[None]
        write_volume(vol, dst / path.name)


def choose_largest_component(raw: dict, lcc: dict) -> list[int]:
    """The label ids whose mean Dice over the cases is higher with the largest component kept
    (nnU-Net's rule: apply where it helps on validation)."""
    return sorted(
        int(lab) for lab, m in raw["mean"].items() if lcc["mean"][lab]["dice"] > m["dice"] + 1e-9
    )


def comparison_rows(work: Path, class_names: dict[int, str]) -> list[dict]:
    """Per class, then the mean over classes: Dice of the fine-tuned and scratch runs (raw label
    maps), of the fine-tuned run with every class's largest component kept (``finetune_lcc``) and
    with it kept where chosen (``finetune_post``)."""
    ev = {n: read_json(work / "evaluation" / n / "summary.json") for n in (*RUNS, LCC)}
    chosen = set(read_json(work / "postprocessing.json")["largest_component"])
    rows = []
    for lab, m in ev["finetune"]["mean"].items():
        row = {"class": f"{class_names.get(int(lab), lab)} ({lab})"}
        row |= {n: ev[n]["mean"][lab]["dice"] for n in (*RUNS, LCC)}
        row["finetune_post"] = row[LCC] if int(lab) in chosen else m["dice"]
        rows.append(row)
    cols = [*RUNS, LCC, "finetune_post"]
    rows.append({"class": "mean", **{c: _mean([r[c] for r in rows]) for c in cols}})
    return rows


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None and v == v]  # NaN: undefined for every case
    return sum(kept) / len(kept) if kept else None


def paired_wins(work: Path) -> tuple[int, int]:
    """(validation cases where the fine-tuned run's mean Dice over classes beats scratch's, cases)."""
    ev = {n: read_json(work / "evaluation" / n / "summary.json")["cases"] for n in RUNS}
    case_mean = lambda run, c: _mean([m["dice"] for m in ev[run][c].values()]) or 0.0  # noqa: E731
    wins = sum(case_mean("finetune", c) > case_mean("scratch", c) for c in ev["finetune"])
    return int(wins), len(ev["finetune"])
