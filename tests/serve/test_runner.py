"""Pure helpers of a job: where a viewer's click lands, how many tiles a volume needs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medfoundry import MedfoundryError
from medfoundry.io import Volume
from medfoundry.io.writers import affine_ras
from medfoundry.serve.runner import _click_voxel


def test_click_in_world_ras_mm_maps_back_to_its_voxel():
    """The RAS position NIfTI's affine gives a voxel (what NiiVue reports) -> that voxel."""
    direction = Rotation.from_euler("xyz", [10, -20, 35], degrees=True).as_matrix()
    vol = Volume(np.zeros((1, 7, 9, 11)), [2.5, 0.7, 1.1], [-30.0, 12.0, 5.0], direction)
    ras = affine_ras(vol)  # voxel (i, j, k) = (x, y, z) -> RAS mm
    for zyx in [(0, 0, 0), (6, 8, 10), (3, 1, 7)]:
        world = ras @ np.array([zyx[2], zyx[1], zyx[0], 1.0])
        assert _click_voxel({"mm_ras": list(world[:3])}, vol) == zyx
        assert _click_voxel({"zyx": list(zyx)}, vol) == zyx
    with pytest.raises(MedfoundryError, match="outside"):
        _click_voxel({"zyx": [7, 0, 0]}, vol)
    with pytest.raises(MedfoundryError, match="needs"):
        _click_voxel({"positive": True}, vol)
