"""What one job does: read the upload -> predict -> write the label map, DICOM SEG and findings.

Models are loaded once at start (:class:`ModelSet`, weights only: safetensors + JSON, never
pickle) and shared by the worker threads. Progress while predicting is the count of network
forward passes (sliding-window tiles) over an estimate of the tiles the volume needs.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError
from medfoundry.inference.predictor import Predictor
from medfoundry.inference.sliding_window import count_tiles
from medfoundry.io import Volume, VolumeReadError, read_image, read_label, write_volume
from medfoundry.runs.checkpoint import load_checkpoint, resolve_checkpoint
from medfoundry.serve.jobs import Job, JobQueue

log = logging.getLogger(__name__)
IMAGE_FILE = "image.nii.gz"
LABELS_FILE = "labels.nii.gz"
MODEL_LABELS_FILE = "labels_model.nii.gz"
SEG_FILE = "labels_seg.dcm"


@dataclass
class ServedModel:
    name: str
    path: Path
    predictor: Predictor

    def describe(self) -> dict:
        p = self.predictor
        return {
            "name": self.name,
            "classes": {str(i): n for i, n in zip(p.output_ids, p.class_names, strict=True)},
            "promptable": bool(p.task.prompt_channels),
            "patch_size_vox": list(p.patch),
        }


class ModelSet:
    """The models a server offers, by name, each loaded once."""

    def __init__(self, models: dict[str, Path], device: str = "auto") -> None:
        if not models:
            raise MedfoundryError("no model given (--model NAME=PATH)")
        self.models: dict[str, ServedModel] = {}
        for name, path in models.items():
            predictor = Predictor(load_checkpoint(resolve_checkpoint(path)), device)
            self.models[name] = ServedModel(name, Path(path), predictor)
            _count_forwards(predictor)

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise MedfoundryError(f"unknown model '{name}' (offered: {', '.join(self.models)})")
        return self.models[name]


_progress = threading.local()  # per worker thread: the callback of the job it runs


def _count_forwards(predictor: Predictor) -> None:
    """Call the running job's tile callback after each forward pass of ``predictor``'s network."""

    def hook(module, args, output) -> None:
        callback = getattr(_progress, "callback", None)
        if callback is not None:
            callback()

    predictor.model.register_forward_hook(hook)


def estimate_tiles(image: Volume, predictor: Predictor) -> int:
    """Tiles one sliding-window pass will place: the image resampled to the model's spacing (the
    nonzero crop ignored, so an over-estimate), times the mirrored passes."""
    target = np.asarray(predictor.dataset_plan["target_spacing_mm"], dtype=float)
    shape = np.maximum(np.round(np.asarray(image.shape_zyx) * image.spacing_mm / target), 1)
    tiles = count_tiles([int(s) for s in shape], predictor.patch, predictor.options.step_fraction)
    return tiles * 2 ** len(predictor.mirror_axes(image))


def run_job(job: Job, folder: Path, models: ModelSet, jobs: JobQueue) -> None:
    """Segment the job's input; fills ``job.files``, ``job.class_names``, ``job.findings``."""
    served = models.get(job.model)
    clock = _Clock(job)
    jobs.set_progress(job, 0.02, "reading image")
    source = find_input(folder, job.input_kind)
    try:
        image = read_image(source)
    except VolumeReadError as exc:  # the user's file name, not the server's paths
        raise MedfoundryError(f"{job.filename}: could not read the image ({exc.reason})") from None
    if job.input_kind == "dicom":
        write_volume(image, folder / IMAGE_FILE)  # the viewer reads NIfTI
    job.files["image"] = IMAGE_FILE if job.input_kind == "dicom" else source.name
    clock.lap("read")
    total = max(estimate_tiles(image, served.predictor), 1)
    done = [0]

    def on_tile() -> None:
        done[0] += 1
        jobs.set_progress(job, 0.1 + 0.8 * min(done[0] / total, 1.0))

    jobs.set_progress(job, 0.1, "predicting")
    _progress.callback = on_tile
    try:
        prediction = served.predictor.predict(image, name=job.filename)
    finally:
        _progress.callback = None
    del image
    clock.lap("predict")
    jobs.set_progress(job, 0.92, "writing results")
    write_volume(prediction.labels, folder / LABELS_FILE)
    job.files["labels"] = LABELS_FILE
    job.class_names = {
        str(i): n for i, n in zip(prediction.class_ids, prediction.class_names, strict=True)
    }
    clock.lap("write")
    write_derived(job, folder, prediction.labels)
    clock.lap("report")


class _Clock:
    """Seconds per stage into ``job.timings_s``."""

    def __init__(self, job: Job) -> None:
        self.job, self.t = job, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.job.timings_s[stage] = round(now - self.t, 3)
        self.t = now


def write_derived(job: Job, folder: Path, labels: Volume) -> None:
    """Findings report and (for DICOM input) a DICOM SEG from ``labels`` (``(1, Z, Y, X)``), each
    when its writer is installed; a missing or failing writer becomes a note, not a failed job."""
    names = {int(k): v for k, v in job.class_names.items()}
    job.notes = [n for n in job.notes if not n.startswith(("findings", "DICOM SEG"))]
    report = _optional("medfoundry.workflows.findings_report", "write_findings_report")
    if report is None:
        job.notes.append("findings report unavailable (its writer is not installed)")
    else:
        try:
            image = read_image(folder / job.files.get("image", IMAGE_FILE))
            job.findings = report(labels, names, folder, image=image, case="case")
            job.files["findings_json"] = "case_findings.json"
            job.files["findings_html"] = "case_findings.html"
        except MedfoundryError as exc:
            job.notes.append(f"findings report failed: {exc}")
    if job.input_kind != "dicom":
        return
    seg = _optional("medfoundry.io.dicom_seg", "write_dicom_seg")
    if seg is None:
        job.notes.append("DICOM SEG unavailable (its writer is not installed)")
        return
    try:
        seg(labels, find_input(folder, "dicom"), names, folder / SEG_FILE)
        job.files["seg"] = SEG_FILE
    except MedfoundryError as exc:
        job.notes.append(f"DICOM SEG failed: {exc}")


def apply_correction(job: Job, folder: Path, upload: Path) -> None:
    """Replace the job's labels by a corrected label map (a NIfTI in the same geometry, e.g. the
    viewer's brush edits); the model's own labels are kept as ``labels_model.nii.gz``."""
    corrected = read_label(upload)
    labels = read_label(folder / LABELS_FILE)
    if corrected.shape_zyx != labels.shape_zyx:
        raise MedfoundryError(
            f"corrected mask has shape {corrected.shape_zyx}, the labels {labels.shape_zyx}"
        )
    unknown = sorted(set(np.unique(corrected.array).tolist()) - {0, *map(int, job.class_names)})
    if unknown:
        raise MedfoundryError(f"corrected mask holds unknown label ids {unknown}")
    model_labels = folder / MODEL_LABELS_FILE
    if not model_labels.exists():
        (folder / LABELS_FILE).replace(model_labels)
    fixed = labels.with_array(corrected.array.astype(labels.array.dtype))
    write_volume(fixed, folder / LABELS_FILE)
    job.files["labels_model"] = MODEL_LABELS_FILE
    write_derived(job, folder, fixed)


def apply_clicks(
    job: Job, folder: Path, served: ServedModel, points: list[dict], label: int
) -> int:
    """Segment one object of class ``label`` from clicks with a promptable model and make it that
    class's extent in the job's labels (the model's first labels kept as ``labels_model.nii.gz``).

    ``points``: ``{"zyx": [z, y, x]}`` (input voxel indices) or ``{"mm_ras": [x, y, z]}`` (world
    RAS mm, what viewers report), each with ``"positive"`` (default true), replayed in order.
    Returns the object's voxel count. One such request runs at a time (it holds a volume)."""
    from medfoundry.inference.interactive import InteractiveSession

    if str(label) not in job.class_names:
        raise MedfoundryError(f"unknown label id {label} (the job has {sorted(job.class_names)})")
    session = InteractiveSession(served.predictor)  # refuses a model that takes no prompts
    if not points:
        raise MedfoundryError("no clicks given")
    with _INTERACTIVE:
        image = read_image(folder / job.files["image"])
        session.set_volume(image)
        for p in points:
            mask = session.add_point(_click_voxel(p, image), bool(p.get("positive", True)))
    labels = read_label(folder / LABELS_FILE)
    new = labels.array.copy()
    new[new == label] = 0
    new[0][mask] = label
    model_labels = folder / MODEL_LABELS_FILE
    if not model_labels.exists():
        (folder / LABELS_FILE).replace(model_labels)
    fixed = labels.with_array(new)
    write_volume(fixed, folder / LABELS_FILE)
    job.files["labels_model"] = MODEL_LABELS_FILE
    write_derived(job, folder, fixed)
    return int(mask.sum())


_INTERACTIVE = threading.Lock()


def _click_voxel(point: dict, image: Volume) -> tuple[int, int, int]:
    """A click's input voxel ``(z, y, x)``; a click outside the volume is an error."""
    if "zyx" in point:
        zyx = np.asarray(point["zyx"], dtype=float)
    elif "mm_ras" in point:  # world RAS -> LPS -> voxel (the axis contract of io.volume)
        lps = np.asarray(point["mm_ras"], dtype=float) * np.array([-1.0, -1.0, 1.0])
        zyx = np.linalg.solve(image.direction * image.spacing_mm, lps - image.origin_mm)
    else:
        raise MedfoundryError(f"a click needs 'zyx' or 'mm_ras': {point}")
    zyx = np.rint(zyx).astype(int)
    if zyx.shape != (3,) or np.any(zyx < 0) or np.any(zyx >= image.shape_zyx):
        raise MedfoundryError(f"click {point} is outside the volume {image.shape_zyx}")
    return tuple(int(v) for v in zyx)


def find_input(folder: Path, kind: str) -> Path:
    """The image file (NIfTI) or DICOM series folder (zip) of a job folder."""
    if kind == "nifti":
        return folder / IMAGE_FILE if (folder / IMAGE_FILE).exists() else folder / "image.nii"
    marker = folder / "dicom_series.txt"
    return folder / marker.read_text().strip()


def _optional(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
