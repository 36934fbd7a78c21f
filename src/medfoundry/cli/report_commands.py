"""``medfoundry report``: (being written)."""

from __future__ import annotations


def add_report(sub, common) -> None:
    """Register the subcommand (being written)."""
