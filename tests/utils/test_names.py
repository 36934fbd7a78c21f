"""Names that become paths, and paths built from them, never leave their folder."""

from __future__ import annotations

import os

import pytest

from medfoundry import MedfoundryError
from medfoundry.utils.names import check_case_id, check_name, path_inside


@pytest.mark.parametrize(
    "name", ["hippocampus", "hippocampus_001", "patient001_frame01", "BRATS-2.0", "a+b", "0"]
)
def test_plain_names_pass(name):
    assert check_name(name, "case") == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        ".",
        "../x",
        "a/b",
        "a\\b",
        "/abs",
        ".hidden",
        "-flag",
        "a..b",
        "x\n",
        "a b",
        "a" * 201,
    ],
)
def test_names_that_could_reach_outside_are_refused_in_one_line(name):
    with pytest.raises(MedfoundryError, match="is not a plain name") as err:
        check_name(name, "dataset name")
    assert "\n" not in str(err.value).replace(repr(name), "")


def test_case_ids_are_two_plain_names():
    assert check_case_id("acdc/patient001") == "acdc/patient001"
    for bad in ["acdc", "a/b/c", "acdc/../x", "../acdc/x", "acdc/"]:
        with pytest.raises(MedfoundryError):
            check_case_id(bad)


def test_path_inside_follows_symbolic_links(tmp_path):
    (tmp_path / "base").mkdir()
    assert path_inside(tmp_path / "base", "a", "b.npy") == tmp_path / "base" / "a" / "b.npy"
    with pytest.raises(MedfoundryError, match="outside"):
        path_inside(tmp_path / "base", "..", "x")
    os.symlink(tmp_path, tmp_path / "base" / "link")
    with pytest.raises(MedfoundryError, match="outside"):
        path_inside(tmp_path / "base", "link", "x")
