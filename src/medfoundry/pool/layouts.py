"""Dataset layouts: find the cases (image files per channel + label file) of one dataset folder.

* ``nnunet`` (v2): ``dataset.json`` with ``channel_names``/``labels``/``file_ending``;
  ``imagesTr/{case}_{0000..}{file_ending}``, ``labelsTr/{case}{file_ending}``.
* ``msd``: ``dataset.json`` with ``modality``/``labels`` keyed by id; ``imagesTr/{case}.nii.gz``
  (4D for several modalities) and ``labelsTr/{case}.nii.gz``.
* ``folder``: filename patterns with ``{case}`` (one image pattern per channel) and optional case lists.

Case names become parts of output paths, so every one (from a file name or a case list) must be a
plain name (:func:`medfoundry.utils.names.check_name`); anything else is a one-line error naming the
dataset and where the name came from. In the nnU-Net and MSD layouts the cases are the label files;
an image without one is listed in :attr:`DatasetLayout.unlabelled` so that the build reports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.pool.spec import DatasetSpec
from medfoundry.utils.names import check_name


@dataclass
class CaseFiles:
    """The files of one case: one image path per channel (or one multi-channel file) and a label."""

    case: str
    images: list[Path]
    label: Path | None
    """None: an image-only case (a dataset without labels, for self-supervised training)."""


@dataclass
class DatasetLayout:
    """What a dataset folder holds once its layout is resolved."""

    layout: str
    cases: list[CaseFiles]
    modality: list[str] = field(default_factory=list)
    """One entry per channel (may be empty when unknown)."""
    label_names: dict[int, str] = field(default_factory=dict)
    """Local id -> name from ``dataset.json`` (background excluded), when the layout has one."""
    unlabelled: list[CaseFiles] = field(default_factory=list)
    """Images with no label file (nnU-Net, MSD); ``label`` is the path it was expected at."""
    labelled: bool = True
    """False: a dataset without label files (no ``labelsTr``, no ``labels`` pattern); its cases are
    image-only, for self-supervised training."""


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
        found = _nnunet(spec)
    elif layout == "msd":
        found = _msd(spec)
    else:
        found = _folder(spec)
    if spec.case_lists:
        found = _apply_case_lists(spec, found)
    if spec.channels is not None:
        found = _select_channels(spec, found)
    if spec.images_only:  # its labels stay out: every image is an image-only case
        cases = [replace(c, label=None) for c in found.cases + found.unlabelled]
        found = replace(found, cases=cases, unlabelled=[])
        found = replace(found, label_names={}, labelled=False)
    if not found.cases:
        unlabelled = (
            f"; {len(found.unlabelled)} image(s) without a label" if found.unlabelled else ""
        )
        raise MedfoundryError(
            f"dataset '{spec.name}': no cases found in {spec.root} ({layout} layout{unlabelled})"
        )
    return found


def _nnunet(spec: DatasetSpec) -> DatasetLayout:
    root = spec.root
    meta = _read_json(root / "dataset.json")
    channels = meta.get("channel_names") or meta.get("modality") or {}
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(channels, dict) or not channels or not all(map(_is_int, channels)):
        raise MedfoundryError(
            f"{root / 'dataset.json'}: 'channel_names' must map 0, 1, ... to names"
        )
    if not isinstance(ending, str) or not re.fullmatch(r"\.[A-Za-z0-9][A-Za-z0-9.]*", ending):
        raise MedfoundryError(f"{root / 'dataset.json'}: 'file_ending' {ending!r} is not a suffix")

    has_labels = (root / "labelsTr").is_dir()

    def case_files(case: str) -> CaseFiles:
        images = [root / "imagesTr" / f"{case}_{c:04d}{ending}" for c in range(len(channels))]
        return CaseFiles(
            case, images, root / "labelsTr" / f"{case}{ending}" if has_labels else None
        )

    labelled = _case_names(spec, root / "labelsTr", ending)
    images = _case_names(spec, root / "imagesTr", ending, channel_suffix=True)
    names = {int(v): k for k, v in _dict(meta, "labels").items() if _is_int(v) and int(v) > 0}
    modality = [str(channels[k]) for k in sorted(channels, key=int)]
    return _listed("nnunet", has_labels, images, labelled, case_files, modality, names)


def _msd(spec: DatasetSpec) -> DatasetLayout:
    root = spec.root
    meta = _read_json(root / "dataset.json")

    has_labels = (root / "labelsTr").is_dir()

    def case_files(case: str) -> CaseFiles:
        name = f"{case}.nii.gz"
        return CaseFiles(
            case, [root / "imagesTr" / name], root / "labelsTr" / name if has_labels else None
        )

    labelled = _case_names(spec, root / "labelsTr", ".nii.gz")
    images = _case_names(spec, root / "imagesTr", ".nii.gz")
    modalities = _dict(meta, "modality")
    modality = [str(v) for k, v in sorted(modalities.items(), key=lambda kv: _sort_key(kv[0]))]
    names = {int(k): str(v) for k, v in _dict(meta, "labels").items() if _is_int(k) and int(k) > 0}
    return _listed("msd", has_labels, images, labelled, case_files, modality, names)


def _listed(layout, has_labels, images, labelled, case_files, modality, names) -> DatasetLayout:
    """A dataset folder's cases: with a ``labelsTr`` folder, the labelled cases (images without a
    label are listed as ``unlabelled``, a problem the build reports); without one, every image as
    an image-only case (a dataset for self-supervised training)."""
    if not has_labels:
        return DatasetLayout(layout, [case_files(c) for c in images], modality, {}, labelled=False)
    return DatasetLayout(
        layout,
        [case_files(c) for c in labelled],
        modality,
        names,
        unlabelled=[case_files(c) for c in sorted(set(images) - set(labelled))],
    )


def _case_names(
    spec: DatasetSpec, folder: Path, ending: str, channel_suffix: bool = False
) -> list[str]:
    """Sorted case names of the ``*<ending>`` files in ``folder`` (hidden files skipped); with
    ``channel_suffix`` the names end in ``_0000``, ``_0001``... (nnU-Net images), which is removed."""
    regex = re.compile(r"(?P<case>.+?)" + (r"_\d{4}" if channel_suffix else "") + re.escape(ending))
    names = set()
    for path in folder.glob(f"*{ending}"):
        m = regex.fullmatch(path.name)
        if m and not path.name.startswith("."):
            names.add(_case_name(spec, m.group("case"), f"file {path}"))
    return sorted(names)


def _case_name(spec: DatasetSpec, case: str, source: str) -> str:
    """``case`` if it is a plain name; else a one-line error naming the dataset and ``source``."""
    try:
        return check_name(case, "case name")
    except MedfoundryError as err:
        raise MedfoundryError(f"dataset '{spec.name}': {source}: {err}") from None


def _folder(spec: DatasetSpec) -> DatasetLayout:
    """Cases from the ``images`` (and ``labels``) patterns; without ``labels``, image-only cases
    (found from the first image pattern)."""
    if not spec.images:
        raise MedfoundryError(f"dataset '{spec.name}': the folder layout needs 'images' patterns")
    # With case lists the lists define the cases (files are checked during validation).
    names = [] if spec.case_lists else _glob_cases(spec, spec.labels or spec.images[0])
    cases = [_folder_case(spec, n) for n in names]
    return DatasetLayout("folder", cases, labelled=spec.labels is not None)


def _folder_case(spec: DatasetSpec, case: str) -> CaseFiles:
    images = [spec.root / p.format(case=case) for p in spec.images]
    label = spec.root / spec.labels.format(case=case) if spec.labels else None
    return CaseFiles(case, images, label)


def _glob_cases(spec: DatasetSpec, pattern: str) -> list[str]:
    """Sorted case names of the files under ``spec.root`` that match ``pattern`` (hidden skipped)."""
    root = spec.root
    prefix, suffix = pattern.split("{case}", 1)
    regex = re.compile(re.escape(prefix) + r"(?P<case>[^/]+?)" + re.escape(suffix) + "$")
    found = []
    for path in root.glob(pattern.replace("{case}", "*")):
        m = regex.match(path.relative_to(root).as_posix())
        if m and not path.name.startswith("."):
            found.append(_case_name(spec, m.group("case"), f"file {path}"))
    return sorted(found)


def _apply_case_lists(spec: DatasetSpec, found: DatasetLayout) -> DatasetLayout:
    """Keep the cases the lists name, in their order (folder layout: the lists define the cases)."""
    wanted = _read_case_lists(spec)
    if spec.images:
        by_name = {c.case: c for c in found.cases}
        return replace(found, cases=[by_name.get(n) or _folder_case(spec, n) for n in wanted])
    labelled = {c.case: c for c in found.cases}
    unlabelled = {c.case: c for c in found.unlabelled}
    missing = [n for n in wanted if n not in labelled and n not in unlabelled]
    if missing:
        raise MedfoundryError(
            f"dataset '{spec.name}': case lists name cases with no image or label file: "
            f"{', '.join(missing[:5])}"
        )
    return replace(
        found,
        cases=[labelled[n] for n in wanted if n in labelled],
        unlabelled=[unlabelled[n] for n in wanted if n in unlabelled],
    )


def _read_case_lists(spec: DatasetSpec) -> list[str]:
    """The case names of the dataset's case list files (one per line, ``#`` comments), first-seen order."""
    wanted: dict[str, None] = {}
    for name in spec.case_lists:
        path = spec.root / name
        if not path.is_file():
            raise MedfoundryError(f"dataset '{spec.name}': case list {path} not found")
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise MedfoundryError(
                f"dataset '{spec.name}': case list {path}: unreadable ({exc})"
            ) from exc
        for number, line in enumerate(lines, 1):
            case = line.strip()
            if case and not case.startswith("#"):
                wanted[_case_name(spec, case, f"case list {path}, line {number}")] = None
    return list(wanted)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedfoundryError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MedfoundryError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _dict(meta: dict, key: str) -> dict:
    """``meta[key]`` when it is a mapping, else empty (``labels``, ``modality`` of a dataset.json)."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def _sort_key(key: object) -> tuple[int, str]:
    return (int(key), "") if _is_int(key) else (1 << 30, str(key))  # type: ignore[arg-type]


def _is_int(v: object) -> bool:
    try:
        int(v)  # type: ignore[arg-type]
        return True
    except (TypeError, ValueError):
        return False


def _select_channels(spec: DatasetSpec, found: DatasetLayout) -> DatasetLayout:
    """Keep the channel files (and their modalities) that ``spec.channels`` names, in its order."""
    chosen = spec.channels or []
    for case in found.cases + found.unlabelled:
        if len(case.images) == 1 and chosen != [0]:
            raise MedfoundryError(
                f"dataset '{spec.name}': 'channels' picks channel files, but case '{case.case}' "
                "stores its channels in one file"
            )
        if max(chosen) >= len(case.images):
            raise MedfoundryError(
                f"dataset '{spec.name}': channel {max(chosen)} asked for, case '{case.case}' has "
                f"{len(case.images)}"
            )
        case.images = [case.images[c] for c in chosen]
    if len(found.modality) > max(chosen):
        found.modality = [found.modality[c] for c in chosen]
    return found
