"""Argument types that refuse impossible numbers where they are parsed (argparse names the flag)."""

from __future__ import annotations

import argparse
import math


def _number(kind: type, low: float, inclusive: bool):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            sign = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {sign} {low:g}, got '{text}'")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid int value" for an unparsable one
    return parse


positive_int = _number(int, 1, True)
non_negative_int = _number(int, 0, True)
positive_float = _number(float, 0, False)
non_negative_float = _number(float, 0, True)


def add_output_type(p, seg_name: str) -> None:
    """``--output-type``, shared by ``predict`` and ``segment``."""
    from medfoundry.inference.predict_files import OUTPUT_TYPES

    p.add_argument(
        "--output-type",
        choices=OUTPUT_TYPES,
        default="nifti",
        help=f"nifti (default; the input's format and header) or dicom-seg (DICOM series inputs: "
        f"{seg_name}, a DICOM SEG referencing the series, one segment per class)",
    )
