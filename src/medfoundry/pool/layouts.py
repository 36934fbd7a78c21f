"""Dataset layouts: find the cases (image files per channel + label file) of one dataset folder.

* ``nnunet`` (v2): ``dataset.json`` with ``channel_names``/``labels``/``file_ending``;
  ``imagesTr/{case}_{0000..}{file_ending}``, ``labelsTr/{case}{file_ending}``.
* ``msd``: ``dataset.json`` with ``modality``/``labels`` keyed by id; ``imagesTr/{case}.nii.gz``
  (4D for several modalities) and ``labelsTr/{case}.nii.gz``.
* ``folder``: filename patterns with ``{case}`` (one image pattern per channel) and optional case lists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.pool.spec import DatasetSpec


@dataclass
class CaseFiles:
    """The files of one case: one image path per channel (or one multi-channel file) and a label."""

    case: str
    images: list[Path]
    label: Path


@dataclass
class DatasetLayout:
    """What a dataset folder holds once its layout is resolved."""

    layout: str
    cases: list[CaseFiles]
    modality: list[str] = field(default_factory=list)
    """One entry per channel (may be empty when unknown)."""
    label_names: dict[int, str] = field(default_factory=dict)
    """Local id -> name from ``dataset.json`` (background excluded), when the layout has one."""


def detect_layout(spec: DatasetSpec) -> str:
    """The layout name of a dataset: the spec's, or detected from its folder."""
    if spec.layout != "auto":
        return spec.layout
    if spec.images:
        return "folder"
    meta = spec.root / "dataset.json"
    if meta.is_file():
        data = _read_json(meta)
        if "channel_names" in data:
            return "nnunet"
        if "modality" in data:
            return "msd"
        raise MedfoundryError(f"{meta}: has neither 'channel_names' (nnU-Net) nor 'modality' (MSD)")
    raise MedfoundryError(
        f"{spec.root}: cannot detect the layout (no dataset.json); give 'images' and 'labels' patterns"
    )


def list_cases(spec: DatasetSpec) -> DatasetLayout:
    """Resolve a dataset's layout and list its cases, sorted by case name (case lists keep their order)."""
    if not spec.root.is_dir():
        raise MedfoundryError(f"dataset '{spec.name}': folder {spec.root} not found")
    layout = detect_layout(spec)
    if layout == "nnunet":
        found = _nnunet(spec.root)
    elif layout == "msd":
        found = _msd(spec.root)
    else:
        found = _folder(spec)
    if spec.case_lists:
        found.cases = _apply_case_lists(spec, found.cases)
    if not found.cases:
        raise MedfoundryError(
            f"dataset '{spec.name}': no cases found in {spec.root} ({layout} layout)"
        )
    return found


def _nnunet(root: Path) -> DatasetLayout:
    meta = _read_json(root / "dataset.json")
    channels = meta.get("channel_names") or meta.get("modality") or {}
    ending = meta.get("file_ending", ".nii.gz")
    n_ch = len(channels)
    cases = []
    for label in sorted((root / "labelsTr").glob(f"*{ending}")):
        if label.name.startswith("."):
            continue
        case = label.name[: -len(ending)]
        images = [root / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(n_ch)]
        cases.append(CaseFiles(case, images, label))
    names = {int(v): k for k, v in meta.get("labels", {}).items() if _is_int(v) and int(v) > 0}
    modality = [str(channels[k]) for k in sorted(channels, key=int)]
    return DatasetLayout("nnunet", cases, modality, names)


def _msd(root: Path) -> DatasetLayout:
    meta = _read_json(root / "dataset.json")
    cases = []
    for label in sorted((root / "labelsTr").glob("*.nii.gz")):
        if label.name.startswith("."):
            continue
        case = label.name[: -len(".nii.gz")]
        cases.append(CaseFiles(case, [root / "imagesTr" / label.name], label))
    modality = [
        str(v) for _, v in sorted(meta.get("modality", {}).items(), key=lambda kv: int(kv[0]))
    ]
    names = {int(k): str(v) for k, v in meta.get("labels", {}).items() if _is_int(k) and int(k) > 0}
    return DatasetLayout("msd", cases, modality, names)


def _folder(spec: DatasetSpec) -> DatasetLayout:
    if not spec.images or not spec.labels:
        raise MedfoundryError(
            f"dataset '{spec.name}': the folder layout needs 'images' and 'labels' patterns"
        )
    # With case lists the lists define the cases (files are checked during validation).
    names = [] if spec.case_lists else _glob_cases(spec.root, spec.labels)
    cases = [_folder_case(spec, n) for n in names]
    return DatasetLayout("folder", cases)


def _folder_case(spec: DatasetSpec, case: str) -> CaseFiles:
    images = [spec.root / p.format(case=case) for p in spec.images]
    return CaseFiles(case, images, spec.root / spec.labels.format(case=case))  # type: ignore[union-attr]


def _glob_cases(root: Path, pattern: str) -> list[str]:
    prefix, suffix = pattern.split("{case}", 1)
    regex = re.compile(re.escape(prefix) + r"(?P<case>[^/]+?)" + re.escape(suffix) + "$")
    found = []
    for path in root.glob(pattern.replace("{case}", "*")):
        m = regex.match(path.relative_to(root).as_posix())
        if m and not path.name.startswith("."):
            found.append(m.group("case"))
    return sorted(found)


def _apply_case_lists(spec: DatasetSpec, cases: list[CaseFiles]) -> list[CaseFiles]:
    wanted: list[str] = []
    for name in spec.case_lists:
        path = spec.root / name
        if not path.is_file():
            raise MedfoundryError(f"dataset '{spec.name}': case list {path} not found")
        for line in path.read_text().splitlines():
            case = line.strip()
            if case and not case.startswith("#") and case not in wanted:
                wanted.append(case)
    by_name = {c.case: c for c in cases}
    if spec.images:  # folder layout: the lists define the cases
        return [by_name.get(n) or _folder_case(spec, n) for n in wanted]
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise MedfoundryError(
            f"dataset '{spec.name}': case lists name cases with no label file: {', '.join(missing[:5])}"
        )
    return [by_name[n] for n in wanted]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MedfoundryError(f"{path}: unreadable JSON ({exc})") from exc


def _is_int(v: object) -> bool:
    try:
        int(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False
