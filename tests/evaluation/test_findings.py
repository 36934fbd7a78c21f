"""Findings on analytic shapes with anisotropic spacing, against hand-computed values and the
obvious all-pairs reference (numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import pdist

from medfoundry import MedfoundryError
from medfoundry.evaluation.findings import compute_findings, longest_diameter
from medfoundry.io import Volume

SPACING = (3.0, 0.7, 0.9)  # (Z, Y, X) mm: slices 3 mm apart, non-square pixels
VOXEL_MM3 = 3.0 * 0.7 * 0.9


def _volume(lab: np.ndarray, direction=None, spacing=SPACING, origin=(10.0, -20.0, 30.0)):
    kw = {} if direction is None else {"direction": direction}
    return Volume(lab[None].astype(np.uint8), spacing, origin, **kw)


def _ellipsoid(shape, centre_mm, semi_axes_mm, spacing=SPACING) -> np.ndarray:
    """Voxels whose centre lies inside the axis-aligned ellipsoid (all in (z, y, x) mm)."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(
        ((g * s - c) / a) ** 2
        for g, s, c, a in zip(grids, spacing, centre_mm, semi_axes_mm, strict=True)
    )
    return r2 <= 1.0


def _rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))  # a random orthonormal matrix (either handedness)


def _structure(findings: dict, cid: int) -> dict:
    return next(s for s in findings["structures"] if s["id"] == cid)


def test_ellipsoid_volume_and_diameters_match_the_analytic_shape():
    a, b, c = 30.0, 20.0, 25.0  # semi-axes along z, y, x in mm
    lab = _ellipsoid((26, 70, 64), (37.5, 24.5, 28.8), (a, b, c)).astype(np.uint8)
    s = _structure(compute_findings(_volume(lab), {1: "ellipsoid"}), 1)
    exact_ml = 4.0 / 3.0 * math.pi * a * b * c / 1000.0
    # Voxelisation error: stated tolerance 2% (3 mm slices on a 60 mm axis; measured 0.2%).
    assert s["volume_ml"] == pytest.approx(exact_ml, rel=0.02)
    assert s["voxels"] * VOXEL_MM3 / 1000.0 == pytest.approx(s["volume_ml"], rel=1e-12)
    assert s["n_components"] == 1
    comp = s["components"][0]
    # Voxel centres lie inside: the diameter is at most the true one, and within one voxel of it.
    assert 2 * a - 2 * 3.0 <= comp["longest_diameter_mm"] <= 2 * a + 1e-9
    assert 2 * c - 2 * 0.9 <= comp["longest_axial_diameter_mm"] <= 2 * c + 1e-9
    assert comp["centroid_zyx_vox"] == pytest.approx([37.5 / 3.0, 24.5 / 0.7, 28.8 / 0.9], abs=0.2)


def test_box_diameter_is_its_space_diagonal_between_voxel_centres():
    lab = np.zeros((12, 40, 30), np.uint8)
    lab[2:9, 5:31, 4:25] = 1  # 7 x 26 x 21 voxels
    s = _structure(compute_findings(_volume(lab), {1: "box"}), 1)
    comp = s["components"][0]
    ext = np.array([6 * 3.0, 25 * 0.7, 20 * 0.9])  # centre-to-centre extents in mm
    assert comp["longest_diameter_mm"] == pytest.approx(float(np.linalg.norm(ext)), abs=1e-9)
    assert comp["longest_axial_diameter_mm"] == pytest.approx(math.hypot(*ext[1:]), abs=1e-9)
    assert s["volume_ml"] == pytest.approx(7 * 26 * 21 * VOXEL_MM3 / 1000.0, rel=1e-12)
    assert comp["bbox_zyx_vox"] == [[2, 9], [5, 31], [4, 25]]
    assert comp["centroid_zyx_vox"] == pytest.approx([5.0, 17.5, 14.0])
    origin = np.array([10.0, -20.0, 30.0])  # default direction: array (Z, Y, X) along world z, y, x
    assert comp["centroid_lps_mm"] == pytest.approx(origin + [14.0 * 0.9, 17.5 * 0.7, 5.0 * 3.0])


def test_two_spheres_are_two_components_largest_first_with_their_volumes():
    shape = (30, 120, 100)
    big = _ellipsoid(shape, (45.0, 30.0, 30.0), (18.0, 18.0, 18.0))
    small = _ellipsoid(shape, (45.0, 60.0, 65.0), (10.0, 10.0, 10.0))
    assert not (big & small).any()
    lab = (big | small).astype(np.uint8)
    s = _structure(compute_findings(_volume(lab), {1: "lesion"}), 1)
    assert s["n_components"] == 2
    first, second = s["components"]
    assert (first["index"], second["index"]) == (1, 2)
    assert first["voxels"] == int(big.sum()) and second["voxels"] == int(small.sum())
    for comp, r in ((first, 18.0), (second, 10.0)):  # stated tolerance 2% (measured 0.6%)
        assert comp["volume_ml"] == pytest.approx(4.0 / 3.0 * math.pi * r**3 / 1000.0, rel=0.02)
    assert s["volume_ml"] == pytest.approx(first["volume_ml"] + second["volume_ml"])


def test_components_are_26_connected_and_small_ones_can_be_left_out():
    lab = np.zeros((5, 6, 6), np.uint8)
    lab[1, 1, 1] = lab[2, 2, 2] = 1  # touch at a corner only: one component
    lab[4, 5, 5] = 1  # a lone voxel: its own component, diameter 0
    s = _structure(compute_findings(_volume(lab), {1: "x"}), 1)
    assert s["n_components"] == 2
    assert [c["voxels"] for c in s["components"]] == [2, 1]
    assert s["components"][1]["longest_diameter_mm"] == 0.0
    assert s["components"][1]["longest_axial_diameter_mm"] == 0.0
    assert s["components"][0]["longest_diameter_mm"] == pytest.approx(math.sqrt(9 + 0.49 + 0.81))
    kept = _structure(compute_findings(_volume(lab), {1: "x"}, min_component_voxels=2), 1)
    assert (kept["n_components"], kept["n_small_components"]) == (1, 1)
    assert kept["voxels"] == 3  # the structure's volume still counts every voxel


def test_a_rotated_and_flipped_grid_gives_the_same_measurements():
    rng = np.random.default_rng(3)
    lab = _ellipsoid((20, 60, 50), (30.0, 20.0, 22.0), (15.0, 12.0, 9.0)).astype(np.uint8)
    lab[15:18, 40:50, 30:45] = 1  # a second component: a box
    plain = compute_findings(_volume(lab), {1: "x"})
    # In-plane rotation by 30 degrees plus flipped slice order: axial stays axial.
    t = math.radians(30)
    in_plane = np.array([[0, math.sin(t), math.cos(t)], [0, math.cos(t), -math.sin(t)], [-1, 0, 0]])
    oblique = _rotation(rng)  # any orientation: the axial axis may change, 3D values may not
    for direction, same_axial in ((in_plane, True), (oblique, False)):
        other = compute_findings(_volume(lab, direction), {1: "x"})
        a, b = _structure(plain, 1), _structure(other, 1)
        assert b["volume_ml"] == pytest.approx(a["volume_ml"], rel=1e-12)
        for ca, cb in zip(a["components"], b["components"], strict=True):
            assert cb["longest_diameter_mm"] == pytest.approx(ca["longest_diameter_mm"], abs=1e-9)
            if same_axial:
                assert cb["longest_axial_diameter_mm"] == pytest.approx(
                    ca["longest_axial_diameter_mm"], abs=1e-9
                )
            world = np.array([10.0, -20.0, 30.0]) + direction @ (
                np.array(SPACING) * cb["centroid_zyx_vox"]
            )
            assert cb["centroid_lps_mm"] == pytest.approx(world)


def test_voxel_volume_is_the_determinant_for_a_sheared_grid():
    d = np.eye(3)[:, ::-1].copy()
    d[:, 1] = np.array([0.6, 0.8, 0.0])  # unit columns, not orthogonal: a gantry-tilt-like shear
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1:3, 1:4, 2:5] = 1
    f = compute_findings(_volume(lab, d), {1: "x"})
    voxel = abs(np.linalg.det(d * np.array(SPACING)))
    assert f["geometry"]["voxel_volume_mm3"] == pytest.approx(voxel)
    assert _structure(f, 1)["volume_ml"] == pytest.approx(18 * voxel / 1000.0)
    pts = np.argwhere(lab) @ (d * np.array(SPACING)).T
    assert _structure(f, 1)["components"][0]["longest_diameter_mm"] == pytest.approx(
        pdist(pts).max()
    )


def test_absent_and_unnamed_classes():
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1, 1, 1] = 1
    lab[2, 2, 2] = 7
    image = Volume(np.ones((1, 4, 5, 6), np.float32), SPACING)
    f = compute_findings(_volume(lab), {0: "background", 1: "a", 2: "absent"}, image, "CT")
    assert [s["id"] for s in f["structures"]] == [1, 2]  # background is never reported
    absent = _structure(f, 2)
    assert absent == {
        "id": 2,
        "name": "absent",
        "voxels": 0,
        "volume_ml": 0.0,
        "n_components": 0,
        "n_small_components": 0,
        "components": [],
        "intensity": None,
    }
    assert f["unnamed_label_ids"] == [7]
    assert f["connectivity"] == 26 and f["axial_axis"] == "Z"
    empty = compute_findings(_volume(np.zeros((3, 3, 3), np.uint8)), {1: "a"})
    assert _structure(empty, 1)["volume_ml"] == 0.0 and empty["unnamed_label_ids"] == []


def test_intensity_statistics_match_numpy_per_channel_with_the_unit():
    rng = np.random.default_rng(0)
    lab = np.zeros((8, 20, 20), np.uint8)
    lab[2:6, 3:15, 5:12] = 1
    lab[0, 0, 0] = 1  # a second component: statistics cover the whole structure
    arr = np.stack([rng.normal(40, 15, lab.shape), rng.uniform(0, 1, lab.shape)]).astype(np.float32)
    image = Volume(arr, SPACING, (10.0, -20.0, 30.0))
    ct = compute_findings(_volume(lab), {1: "organ"}, image, "CT")
    mr = compute_findings(_volume(lab), {1: "organ"}, image, "MR")
    assert ct["intensity_unit"] == "HU" and mr["intensity_unit"] == "a.u."
    stats = _structure(ct, 1)["intensity"]
    for ch, st in enumerate(stats):
        v = arr[ch][lab == 1].astype(np.float64)
        assert st["channel"] == ch and st["unit"] == "HU"
        assert st["mean"] == pytest.approx(v.mean(), rel=1e-9)
        assert st["std"] == pytest.approx(v.std(), rel=1e-9)
        assert st["median"] == pytest.approx(np.median(v), rel=1e-9)
        assert [st["p5"], st["p95"]] == pytest.approx(np.percentile(v, [5, 95]), rel=1e-9)
    assert _structure(mr, 1)["intensity"][0]["unit"] == "a.u."
    assert compute_findings(_volume(lab), {1: "organ"})["intensity_unit"] is None


@pytest.mark.parametrize("seed", range(6))
def test_hull_diameter_equals_all_pairs_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    lab = (rng.random((6, 12, 12)) < 0.35).astype(np.uint8)
    direction = _rotation(rng) if seed % 2 else None
    f = compute_findings(_volume(lab, direction), {1: "blob"})
    step = (np.eye(3)[:, ::-1] if direction is None else direction) * np.array(SPACING)
    comp, n = ndimage.label(lab, structure=np.ones((3, 3, 3)))
    want = []
    for k in range(1, n + 1):  # the obvious way: all pairs of voxel centres
        idx = np.argwhere(comp == k)
        pts = idx @ step.T
        axial = [pdist(pts[idx[:, 0] == z]) for z in np.unique(idx[:, 0])]
        want.append(
            (
                len(idx),
                round(pdist(pts).max() if len(pts) > 1 else 0.0, 9),
                round(max((d.max() for d in axial if d.size), default=0.0), 9),
            )
        )
    got = [
        (c["voxels"], round(c["longest_diameter_mm"], 9), round(c["longest_axial_diameter_mm"], 9))
        for c in _structure(f, 1)["components"]
    ]
    if direction is not None:  # the axial axis is whichever lies closest to world z
        got, want = [g[:2] for g in got], [w[:2] for w in want]
    assert sorted(got) == sorted(want)
    assert [g[0] for g in got] == sorted((g[0] for g in got), reverse=True)


@pytest.mark.parametrize("dim", [2, 3])
def test_longest_diameter_on_degenerate_and_random_points(dim):
    rng = np.random.default_rng(dim)
    for _ in range(20):
        pts = rng.normal(size=(int(rng.integers(65, 400)), dim)) * rng.uniform(0.1, 5, dim)
        assert longest_diameter(pts) == pytest.approx(pdist(pts).max(), abs=1e-9)
    line = np.outer(np.arange(100.0), rng.normal(size=dim))  # collinear: no hull in full dimension
    assert longest_diameter(line) == pytest.approx(pdist(line).max(), abs=1e-9)
    if dim == 3:
        plane = np.c_[rng.normal(size=(200, 2)), np.zeros(200)]  # coplanar
        assert longest_diameter(plane) == pytest.approx(pdist(plane).max(), abs=1e-9)
    assert longest_diameter(np.zeros((1, dim))) == 0.0


def test_bad_inputs_are_named_errors():
    lab = np.zeros((3, 4, 5), np.uint8)
    with pytest.raises(MedfoundryError, match="image shape"):
        compute_findings(_volume(lab), {1: "a"}, Volume(np.zeros((1, 3, 4, 6)), SPACING))
    with pytest.raises(MedfoundryError, match="one channel"):
        compute_findings(Volume(np.zeros((2, 3, 4, 5), np.uint8), SPACING), {1: "a"})
    with pytest.raises(MedfoundryError, match="min_component_voxels"):
        compute_findings(_volume(lab), {1: "a"}, min_component_voxels=0)
