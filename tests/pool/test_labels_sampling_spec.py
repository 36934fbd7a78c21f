"""Label space, remapping, sampling rules and the pool file schema (hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfoundry import MedfoundryError
from medfoundry.pool import LabelSpace, sampling_probabilities
from medfoundry.pool.labels import invert_map, remap_labels
from medfoundry.pool.spec import load_pool_spec


def test_global_ids_follow_first_appearance():
    space = LabelSpace.from_label_maps(
        [{2: "spleen", 1: "liver"}, {1: "kidney", 2: "liver", 3: None}]
    )
    assert space.to_dict() == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    assert space.local_to_global({1: "kidney", 2: "liver", 3: None}) == {1: 3, 2: 1, 3: 0}


def test_null_label_becomes_background_and_no_class():
    space = LabelSpace.from_label_maps([{1: "liver", 2: None}])
    l2g = space.local_to_global({1: "liver", 2: None})
    local = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(remap_labels(local, l2g), [[0, 1, 0], [0, 1, 0]])
    assert len(space) == 2 and invert_map(l2g) == {1: 1}


def test_sampling_rules_hand_computed():
    datasets = ["a"] * 100 + ["b"] * 4
    p = sampling_probabilities(datasets, "inv_sqrt")
    z = 100 / 10 + 4 / 2  # sum of 1/sqrt(N_d) over cases
    assert math.isclose(p[0], (1 / 10) / z) and math.isclose(p[-1], (1 / 2) / z)
    assert math.isclose(sum(p[:100]), 10 / 12)  # dataset share ~ sqrt(N_d)
    assert math.isclose(sampling_probabilities(datasets, "uniform")[0], 1 / 104)
    eq = sampling_probabilities(datasets, "dataset_equal")
    assert math.isclose(sum(eq[:100]), 0.5) and math.isclose(eq[-1], 0.125)
    with pytest.raises(ValueError, match="unknown sampling rule"):
        sampling_probabilities(datasets, "bogus")


@pytest.mark.parametrize(
    "text,message",
    [
        ("name: x\ndatasets: []\n", "'datasets' is missing or empty"),
        ("name: x\ndatasets:\n  - {name: a, root: a, colour: red}\n", "unknown key 'colour'"),
        ("name: x\ndatasets:\n  - {name: a}\n", "'root' is required"),
        (
            "name: x\ndatasets:\n  - {name: a, root: a, label_map: {zero: liver}}\n",
            "not an integer label id",
        ),
        ("name: x\ndatasets:\n  - {name: a, root: a, label_map: {0: liver}}\n", "0 is background"),
        ("name: x\ndatasets:\n  - {name: a, root: a, images: img.nii.gz}\n", "must contain"),
        ("name: x\ndatasets:\n  - {name: a, root: a}\n  - {name: a, root: b}\n", "must be unique"),
        ("name: x\nsampling: often\ndatasets:\n  - {name: a, root: a}\n", "unknown sampling rule"),
        ("name: [x\n", "not valid YAML"),
    ],
)
def test_pool_file_errors_are_one_line_and_name_the_problem(tmp_path, text, message):
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    with pytest.raises(MedfoundryError, match=message) as err:
        load_pool_spec(path)
    assert "\n" not in str(err.value).strip() or "YAML" in str(err.value)


def test_roots_are_relative_to_the_pool_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "pool.yaml"
    path.write_text(
        "name: x\ndatasets:\n  - {name: a, root: ../data, label_map: {1: liver, 2: null}}\n"
    )
    spec = load_pool_spec(path)
    assert spec.datasets[0].root == (tmp_path / "data").resolve()
    assert spec.datasets[0].label_map == {1: "liver", 2: None}
