"""``medfoundry dicom``: (being written)."""

from __future__ import annotations


def add_dicom(sub, common) -> None:
    """Register the subcommand (being written)."""
