"""The interactive session: coordinates, windows, clicks, boxes and undo on a real volume."""

from __future__ import annotations

import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.inference.interactive import (
    InteractiveSession,
    prompt_window,
    structure_under,
    to_model_grid,
)
from medfoundry.io import read_image


def test_input_voxels_map_to_the_model_grid_through_crop_and_scale():
    props = {
        "nonzero_bbox": [[2, 12], [0, 20], [5, 25]],
        "cropped_shape_zyx": [10, 20, 20],
        "shape_zyx": [30, 10, 20],  # z tripled, y halved
    }
    assert to_model_grid((2, 0, 5), props) == (1, 0, 0)  # the centre of the three z voxels
    assert to_model_grid((11, 19, 24), props) == (28, 9, 19)
    assert to_model_grid((7, 10, 15), props) == (16, 5, 10)
    assert to_model_grid((100, -4, 0), props) == (29, 0, 0)  # clipped to the grid


def test_the_window_is_one_patch_when_the_object_fits():
    w = prompt_window((40, 100, 100), (16, 32, 32), (10, 40, 40), (14, 50, 50))
    assert [s.stop - s.start for s in w] == [16, 32, 32]
    assert w[1].start <= 40 and w[1].stop > 50  # the object is inside
    small = prompt_window((8, 100, 100), (16, 32, 32), (2, 0, 90), (5, 3, 99))
    assert small[0] == slice(0, 8) and small[1].start == 0 and small[2].stop == 100
    big = prompt_window((40, 200, 200), (16, 32, 32), (5, 20, 20), (30, 150, 60))
    assert big[0] == slice(1, 35)  # 26 voxels + 2 x 4 of margin, centred
    assert big[1].start <= 12 and big[1].stop >= 158 and big[2].stop - big[2].start == 57


def test_clicks_boxes_undo_and_objects_on_a_real_volume(promptable_run, hippo_dir):
    image = read_image(sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0])
    session = InteractiveSession.from_checkpoint(promptable_run, "cpu")
    with pytest.raises(MedfoundryError, match="set a volume first"):
        session.add_point((1, 1, 1))
    session.set_volume(image)
    assert session.timings["set_volume_s"] > 0
    centre = tuple(s // 2 for s in image.shape_zyx)
    first = session.add_point(centre)
    assert first.shape == image.shape_zyx and first.dtype == bool
    assert session.timings["last_interaction_s"] > 0
    second = session.add_point((0, 0, 0), positive=False)
    box = session.add_box((0, 0, 0, *(s - 1 for s in image.shape_zyx)))
    assert session.interactions == 3
    assert np.array_equal(session.undo(), second)
    assert np.array_equal(session.undo(), first)
    assert not session.undo().any() and session.interactions == 0
    assert not session.undo().any()  # nothing left to undo
    assert box.shape == first.shape
    with pytest.raises(MedfoundryError, match="each start <= its end"):
        session.add_box((5, 5, 5, 1, 1, 1))
    session.add_point(centre)
    session.new_object()
    assert session.interactions == 0 and not session.mask().any()


def test_a_segmentation_model_takes_no_prompts(pretrained):
    with pytest.raises(MedfoundryError, match="takes no prompts"):
        InteractiveSession.from_checkpoint(pretrained, "cpu")


def test_a_first_click_on_an_automatic_structure_starts_from_its_component():
    labels = np.zeros((6, 8, 8), dtype=np.int64)
    labels[1:3, 1:3, 1:3] = 2
    labels[4:6, 5:8, 5:8] = 2  # another piece of class 2
    labels[1:3, 5:7, 1:3] = 1
    part = structure_under(labels, (1, 1, 1))
    assert part.sum() == 8 and part[2, 2, 2] and not part[4, 5, 5]
    assert structure_under(labels, (2, 6, 2)).sum() == 8
    assert structure_under(labels, (0, 0, 0)) is None


def test_without_auto_start_the_first_click_starts_from_nothing(promptable_run, hippo_dir):
    image = read_image(sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0])
    session = InteractiveSession.from_checkpoint(promptable_run, "cpu", auto_start=False)
    session.set_volume(image)
    assert session._auto is None
    session.add_point(tuple(s // 2 for s in image.shape_zyx))
    assert session._history[-1].prompts.previous is None
