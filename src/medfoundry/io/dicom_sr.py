"""Findings as a DICOM Structured Report (TID 1500 Measurement Report, Comprehensive 3D SR), written
with highdicom next to the DICOM SEG it measures.

Per structure present in the findings (:func:`medfoundry.evaluation.findings.compute_findings`), one
volumetric ROI group referencing that structure's SEG segment, with its volume (ml), the longest
3D diameter of its largest component (mm), the number of its connected components ({count}), and
the mean and standard deviation of the intensity of the first image channel (HU on CT). The
observer is the device (medfoundry); the SR references the source series and the SEG as evidence.
"""

from __future__ import annotations

import os
from pathlib import Path

from medfoundry import __version__
from medfoundry.utils.atomic import atomic_path


def write_findings_sr(
    findings: dict,
    seg_path: str | os.PathLike,
    source_files: list[str | os.PathLike],
    out_path: str | os.PathLike,
) -> Path:
    """Write ``findings`` (the JSON of ``compute_findings`` for the labels of the SEG at
    ``seg_path``, made from the DICOM images ``source_files``) as a Comprehensive 3D SR at
    ``out_path`` (atomically); returns ``out_path``."""
    import pydicom
    from pydicom.sr.codedict import codes

    from medfoundry.io.dicom import require

    hd = require("highdicom")
    seg = pydicom.dcmread(seg_path)
    segment_of = {  # class id -> segment number ("class <id>" is the SEG's tracking ID)
        int(str(s.TrackingID).split()[-1]): int(s.SegmentNumber) for s in seg.SegmentSequence
    }
    algorithm = hd.sr.AlgorithmIdentification(name="medfoundry", version=__version__)
    groups = []
    for s in findings["structures"]:
        if not s["voxels"] or s["id"] not in segment_of:
            continue
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=str(s["name"])[:64]
                ),
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(
                    seg, segment_of[s["id"]]
                ),
                finding_type=codes.SCT.MorphologicallyAbnormalStructure
                if _is_finding(seg, segment_of[s["id"]])
                else codes.SCT.AnatomicalStructure,
                measurements=_measurements(s, findings, algorithm),
                algorithm_id=algorithm,
            )
        )
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="medfoundry", model_name=f"medfoundry {__version__}"
        ),
    )
    procedure = (
        codes.LN.CTUnspecifiedBodyRegion
        if str(findings.get("modality") or "").upper() == "CT"
        else codes.LN.MRIUnspecifiedBodyRegion
        if str(findings.get("modality") or "").upper() in ("MR", "MRI")
        else codes.SCT.ImagingProcedure
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=procedure,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *(pydicom.dcmread(f, stop_before_pixels=True) for f in source_files)],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=int(seg.get("SeriesNumber") or 1000) + 1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medfoundry",
        series_description="medfoundry findings",
    )
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        sr.save_as(tmp)
    return out_path


def _measurements(structure: dict, findings: dict, algorithm) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    def unit(value: str, meaning: str):
        return hd.sr.CodedConcept(value, "UCUM", meaning)

    out = [
        hd.sr.Measurement(codes.SCT.Volume, structure["volume_ml"], unit("ml", "milliliter")),
        hd.sr.Measurement(
            hd.sr.CodedConcept("number_of_components", "99MEDFOUNDRY", "Number of components"),
            structure["n_components"],
            unit("{count}", "count"),
        ),
    ]
    if structure["components"]:
        largest = structure["components"][0]
        out.append(
            hd.sr.Measurement(
                codes.SCT.Diameter, largest["longest_diameter_mm"], unit("mm", "millimeter")
            )
        )
    if structure.get("intensity"):
        first = structure["intensity"][0]
        hu = first.get("unit") == "HU"
        u = unit("[hnsf'U]", "Hounsfield unit") if hu else unit("1", "no units")
        out.append(hd.sr.Measurement(codes.SCT.Mean, first["mean"], u))
        out.append(hd.sr.Measurement(codes.SCT.StandardDeviation, first["std"], u))
    return out


def _is_finding(seg, number: int) -> bool:
    for s in seg.SegmentSequence:
        if int(s.SegmentNumber) == number:
            category = s.SegmentedPropertyCategoryCodeSequence[0]
            return str(category.CodeValue) == "49755003"  # morphologically abnormal structure
    return False
