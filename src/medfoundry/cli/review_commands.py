"""``medfoundry review``: (being written)."""

from __future__ import annotations


def add_review(sub, common) -> None:
    """Register the subcommand (being written)."""
