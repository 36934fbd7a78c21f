"""DICOM Segmentation (SEG) objects, written and read with highdicom.

:func:`write_dicom_seg` turns a label map predicted from a DICOM series (the ``(1, Z, Y, X)``
geometry :func:`~medfoundry.io.dicom.read_series` gave, slice ``k`` = sorted file ``k``) into a
BINARY SEG that references the source series: one segment per class of the label space (class id
order; segment numbers 1..n), named after the class, with the SNOMED CT code of the structure where
pydicom's code dictionary has one, else a code of the private scheme :data:`PRIVATE_SCHEME`.
:func:`read_dicom_seg` reads a SEG back onto its source series as a label map.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from medfoundry import MedfoundryError, __version__
from medfoundry.io.dicom import require, split_selector
from medfoundry.io.volume import Volume

PRIVATE_SCHEME = "99MEDFOUNDRY"  # "99" prefix: a local coding scheme (DICOM PS3.16 8.2)
# Names that are findings rather than anatomy: category "Morphologically abnormal structure".
_ABNORMAL = ("Neoplasm", "Edema", "Necrosis", "Lesion", "Mass", "Tumor")
_ALIASES = {"tumour": "Neoplasm", "tumor": "Neoplasm", "oedema": "Edema", "cyst": "Lesion"}
_SIDES = ("left", "right")


class DicomSegError(MedfoundryError):
    """A label map that does not fit its source series, or a SEG that cannot be read back."""


def structure_codes(name: str):
    """``(category, type)`` codes of a class name: SNOMED CT where pydicom knows the structure
    (the name's words in CamelCase, then without "left"/"right", then word by word with finding
    words such as tumour or edema first), else
    ("Tissue", a private code whose meaning is the name)."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    tries = ["".join(w.capitalize() for w in words)]
    tries.append("".join(w.capitalize() for w in words if w not in _SIDES))
    singles = [_ALIASES.get(w, w.capitalize()) for w in words if w not in _SIDES]
    tries += sorted(singles, key=lambda k: k not in _ABNORMAL)  # "brain tumour": the finding
    for key in tries:
        code = getattr(codes.SCT, key, None) if key else None
        if code is not None:
            abnormal = key in _ABNORMAL or code.meaning in _ABNORMAL
            category = (
                codes.SCT.MorphologicallyAbnormalStructure
                if abnormal
                else codes.SCT.AnatomicalStructure
            )
            return category, code
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:16] or "structure"
    return codes.SCT.Tissue, CodedConcept(slug, PRIVATE_SCHEME, name[:64] or slug)


def write_dicom_seg(
    labels: Volume,
    source: str | os.PathLike | None,
    class_names: dict[int, str],
    out_path: str | os.PathLike,
) -> Path:
    """Write ``labels`` (``(1, Z, Y, X)`` integer class ids) as a DICOM SEG of its source series.

    ``source``: the series folder (``FOLDER::SERIES`` for one of several) the labels were
    predicted from; ``None`` takes the files recorded in ``labels.meta["dicom"]``. The label map
    must have the series' geometry. Returns ``out_path`` (written atomically)."""
    from medfoundry.io.dicom import read_series
    from medfoundry.utils.atomic import atomic_path

    require("highdicom")  # a one-line error without the dicom extra
    files = _source_files(labels, source, read_series)
    if labels.num_channels != 1 or labels.shape_zyx[0] != len(files):
        raise DicomSegError(
            f"label map {labels.shape_zyx} does not fit the source series of {len(files)} slices"
        )
    seg = _segmentation(labels, files, class_names)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp)
    return out_path


def _source_files(labels: Volume, source, read_series) -> list[Path]:
    """The sorted slice files of the source series, after checking ``labels`` has its geometry."""
    if source is None:
        if "dicom" not in labels.meta:
            raise DicomSegError("a DICOM SEG needs the DICOM series the labels were made from")
        return [Path(f) for f in labels.meta["dicom"]["files"]]
    folder, choice = split_selector(source)
    series = read_series(folder, choice)
    if not series.same_geometry(labels, tol=1e-3):
        raise DicomSegError(
            f"label map geometry {labels.geometry()} differs from the series {series.geometry()}"
        )
    return [Path(f) for f in series.meta["dicom"]["files"]]


def _segmentation(labels: Volume, files: list[Path], class_names: dict[int, str]):
    """The highdicom Segmentation: segment ``i + 1`` is the ``i``-th class id in sorted order."""
    import highdicom as hd
    import pydicom

    ids = sorted(int(c) for c in class_names if int(c) != 0)
    array = np.asarray(labels.array[0])
    unknown = sorted(set(np.unique(array).tolist()) - {0, *ids})
    if unknown:
        raise DicomSegError(f"label values {unknown} are not classes of the label space {ids}")
    segment_of = np.zeros(int(max([*ids, int(array.max()), 0])) + 1, dtype=np.uint16)
    segment_of[ids] = np.arange(1, len(ids) + 1)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for ds in sources:  # an empty SpecificCharacterSet means the default repertoire: say so
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medfoundry", version=__version__, family=_codes().ArtificialIntelligence
    )
    descriptions = []
    for number, cid in enumerate(ids, start=1):
        category, kind = structure_codes(class_names[cid])
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=str(class_names[cid])[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=f"class {cid}",
                tracking_uid=hd.UID(),
            )
        )
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_of[array].astype(np.uint16),  # (Z, Y, X): frame k = files[k]
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=_series_number(sources[0]),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medfoundry",
        manufacturer_model_name="medfoundry segmentation",
        software_versions=__version__,
        device_serial_number="0",
        series_description="medfoundry segmentation",
        omit_empty_frames=False,  # every slice present: the SEG reads back voxel for voxel
    )


def _codes():
    from pydicom.sr.codedict import codes

    return codes.DCM


def _series_number(source) -> int:
    """A series number near the source's (source + 1000), as viewers sort series by number."""
    number = source.get("SeriesNumber")
    return int(number) + 1000 if number not in (None, "") else 1000


def read_dicom_seg(
    path: str | os.PathLike, source: str | os.PathLike
) -> tuple[Volume, dict[int, str]]:
    """A SEG on its source series: a ``(1, Z, Y, X)`` uint16 label map in the series' geometry
    (value = segment number; where segments overlap the higher number wins) and
    ``{segment number: segment label}``."""
    from medfoundry.io.dicom import read_series

    hd = require("highdicom")
    folder, choice = split_selector(source)
    series = read_series(folder, choice)
    seg = hd.seg.segread(str(path))
    files = series.meta["dicom"]["files"]
    uids = [_sop_uid(f) for f in files]
    referenced = {ref.ReferencedSOPInstanceUID for ref in _references(seg)}
    if not referenced & set(uids):
        raise DicomSegError(f"{path}: the SEG references none of the series' images")
    numbers = [int(d.SegmentNumber) for d in seg.SegmentSequence]
    names = {int(d.SegmentNumber): str(d.SegmentLabel) for d in seg.SegmentSequence}
    masks = np.zeros(series.shape_zyx, dtype=np.uint16)
    for k, uid in enumerate(uids):
        if uid not in referenced:
            continue
        frame = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid],
            segment_numbers=numbers,
            assert_missing_frames_are_empty=True,
            ignore_spatial_locations=True,  # frames are matched by the instance they reference
        )[0]  # (Y, X, segments)
        for j, number in enumerate(numbers):
            masks[k][frame[..., j] > 0] = number
    return series.with_array(masks[None]), names


def _sop_uid(path: str) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _references(seg):
    for series in seg.ReferencedSeriesSequence:
        yield from series.ReferencedInstanceSequence
