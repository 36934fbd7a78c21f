"""Config: dotted overrides with types, one-line errors for unknown keys, presets."""

from __future__ import annotations

import pytest

from medfoundry import MedfoundryError
from medfoundry.training.config import TrainConfig, apply_overrides, from_dict, load_preset, to_dict


def test_dotted_overrides_set_typed_values():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "optim.lr=0.02",
            "data.augment.enabled=false",
            "patch_size=[16, 32, 32]",
            "data.augment.scale_range=[0.8, 1.2]",
            "batch_size=null",
            "model=tsfm_test",
        ],
    )
    assert (
        cfg.optim.lr == 0.02
        and cfg.data.augment.enabled is False
        and cfg.patch_size == [16, 32, 32]
    )
    assert (
        cfg.data.augment.scale_range == (0.8, 1.2)
        and cfg.batch_size is None
        and cfg.model == "tsfm_test"
    )
    assert from_dict(to_dict(cfg)) == cfg


def test_a_config_saved_before_a_field_existed_keeps_its_behaviour():
    # Checkpoints written before data.one_dataset_per_batch existed trained with mixed batches; a
    # resumed run must go on with them, not switch to the new default.
    saved = to_dict(TrainConfig())
    assert saved["data"]["one_dataset_per_batch"] is True
    assert from_dict(saved).data.one_dataset_per_batch is True
    del saved["data"]["one_dataset_per_batch"]
    assert from_dict(saved).data.one_dataset_per_batch is False


@pytest.mark.parametrize(
    "item,message",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("nothing.lr=1", "unknown config key 'nothing.lr'"),
        ("epochs.x=1", "is not a section"),
        ("epochs=many", "cannot use 'many'"),
        ("amp=3", "cannot use 3"),
        ("data.split_seed=1.5", "cannot use 1.5"),
        ("epochs", "expects key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(item, message):
    with pytest.raises(MedfoundryError, match=message):
        apply_overrides(TrainConfig(), [item])


def test_bundled_preset_loads():
    cfg = load_preset("pretrain_cpu")
    assert cfg.patch_size == [32, 64, 64] and cfg.data.num_workers == 1 and cfg.optim.lr == 0.01
    with pytest.raises(MedfoundryError, match="not found"):
        load_preset("no_such_preset")
