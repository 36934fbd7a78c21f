"""``medfoundry serve``: (being written)."""

from __future__ import annotations


def add_serve(sub, common) -> None:
    """Register the subcommand (being written)."""
