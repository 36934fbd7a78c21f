"""Free-text structure names resolve to a model's classes."""

from __future__ import annotations

import pytest

from medfoundry import MedfoundryError
from medfoundry.pool.synonyms import resolve_class

CLASSES = ["liver", "right_kidney", "left_kidney", "spleen", "hippocampus_anterior", "brain_tumour"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("liver", "liver"),
        ("left kidney", "left_kidney"),
        ("Kidney Left", "left_kidney"),
        ("LK", "left_kidney"),
        ("renal right", "right_kidney"),
        ("anterior hippocampus", "hippocampus_anterior"),
        ("hippocampal head", "hippocampus_anterior"),
        ("brain tumor", "brain_tumour"),
        ("spleeen", "spleen"),
    ],
)
def test_names_synonyms_and_typos_resolve(text, expected):
    assert resolve_class(text, CLASSES) == expected


def test_an_unknown_name_lists_the_classes():
    with pytest.raises(MedfoundryError, match="it has liver, right_kidney"):
        resolve_class("pancreas", CLASSES)
    with pytest.raises(MedfoundryError):
        resolve_class("kidney", ["liver"])  # a synonym of a class the model lacks
