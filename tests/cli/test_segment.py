"""``medfoundry segment``: prompted and automatic, on a real volume, with one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfoundry.cli.main import main
from medfoundry.io import read_image, read_label


@pytest.fixture(scope="module")
def promptable(promptable_run):
    return promptable_run


@pytest.fixture(scope="module")
def scan(hippo_dir):
    return sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0]


def test_points_a_box_and_a_prompts_file_write_masks_in_the_input_geometry(
    promptable, scan, tmp_path, capsys
):
    out = tmp_path / "one.nii.gz"
    argv = ["-q", "segment", "-m", str(promptable), "-i", str(scan), "-o", str(out)]
    assert (
        main([*argv, "--point", "15,20,15", "--point", "1,1,1:neg", "--box", "5,5,5,25,30,25"]) == 0
    )
    assert "prompted: object=1 ->" in capsys.readouterr().out
    image, mask = read_image(scan), read_label(out)
    assert mask.shape_zyx == image.shape_zyx and mask.same_geometry(image)
    assert set(np.unique(mask.array)) <= {0, 1}
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            {
                "objects": [
                    {"name": "a", "points": [[15, 20, 15]]},
                    {"name": "b", "label": 7, "box": [2, 2, 2, 10, 10, 10]},
                ]
            }
        )
    )
    many = tmp_path / "many.nii.gz"
    argv[-1] = str(many)
    assert main([*argv, "--prompts", str(prompts)]) == 0
    assert "a=1, b=7" in capsys.readouterr().out
    assert set(np.unique(read_label(many).array)) <= {0, 1, 7}


def test_automatic_mode_by_class_name(promptable, scan, tmp_path, capsys):
    out = tmp_path / "auto.nii.gz"
    argv = ["-q", "segment", "-m", str(promptable), "-i", str(scan), "-o", str(out)]
    assert main([*argv, "--class", "anterior hippocampus"]) == 0
    assert "automatic: hippocampus_anterior=" in capsys.readouterr().out
    assert read_label(out).shape_zyx == read_image(scan).shape_zyx


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--point", "999,1,1"], "outside the image"),
        (["--point", "1,2"], "give Z,Y,X or Z,Y,X:neg"),
        (["--point", "1,2,3:maybe"], ":neg or :pos"),
        (["--box", "5,5,5,1,1,1"], "each start <= its end"),
        (["--point", "1,1,1", "--class", "liver"], "not several"),
        (["--class", "pancreas"], "no class of this model"),
    ],
)
def test_bad_prompts_are_one_line_errors_and_write_nothing(
    promptable, scan, tmp_path, capsys, extra, message
):
    out = tmp_path / "x.nii.gz"
    argv = ["-q", "segment", "-m", str(promptable), "-i", str(scan), "-o", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medfoundry: error:") and message in err and "\n" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_prompts_file_must_hold_objects(promptable, scan, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"objects": [{"name": "empty"}]}')
    argv = [
        "-q",
        "segment",
        "-m",
        str(promptable),
        "-i",
        str(scan),
        "-o",
        str(tmp_path / "o.nii.gz"),
    ]
    assert main([*argv, "--prompts", str(bad)]) == 2
    assert "every object needs points or a box" in capsys.readouterr().err
