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


@pytest.mark.parametrize(
    "item,message",
    [
        ("loss=dice", "config key 'loss': 'dice' is not one of: partial, softmax"),
        ("freeze=decoder", "is not one of: none, encoder, all-but-bottleneck, head-only"),
        ("optim.name=rmsprop", "config key 'optim.name': 'rmsprop' is not one of: sgd, adamw"),
        ("validation.mode=sometimes", "is not one of: patch, full"),
        ("task=detection", "config key 'task': 'detection' is not one of: segmentation"),
    ],
)
def test_choices_are_checked_once_when_set(item, message):
    with pytest.raises(MedfoundryError, match=message):
        apply_overrides(TrainConfig(), [item])


def test_a_config_of_an_older_version_keeps_its_meaning():
    """Configs saved before validation had a section: their keys move there, and their runs keep
    validating whole volumes during training with no extra validation at the end."""
    old = to_dict(TrainConfig())
    del old["validation"]
    old["val_every"], old["data"]["val_max_cases"] = 3, 7
    cfg = from_dict(old)
    assert (cfg.validation.every, cfg.validation.max_cases) == (3, 7)
    assert cfg.validation.mode == "full" and cfg.validation.final is False
    assert from_dict(to_dict(TrainConfig())).validation == TrainConfig().validation


def test_an_older_key_on_the_command_line_still_works_with_a_warning(caplog):
    cfg = apply_overrides(TrainConfig(), ["val_every=0", "data.val_max_cases=2"])
    assert cfg.validation.every == 0 and cfg.validation.max_cases == 2
    assert "config key 'val_every' is now 'validation.every'" in caplog.text


@pytest.mark.parametrize(
    "item,message",
    [
        ("epochs=0", r"'epochs': must be in \[1, inf\), not 0"),
        ("seed=-1", r"'seed': must be in \[0, inf\), not -1"),
        ("validation.patches=-2", r"'validation.patches': must be in \[0, inf\)"),
        ("batch_size=0", r"'batch_size': must be in \[1, inf\)"),
        ("optim.lr=-0.01", r"'optim.lr': must be in \(0, inf\), not -0.01"),
        ("optim.lr=0", r"'optim.lr': must be in \(0, inf\)"),
        ("optim.lr=.nan", "'optim.lr': must be a finite number"),
        ("optim.lr=.inf", "'optim.lr': must be a finite number"),
        ("optim.momentum=1", r"'optim.momentum': must be in \[0, 1\)"),
        ("data.fg_fraction=1.5", r"'data.fg_fraction': must be in \[0, 1\], not 1.5"),
        ("data.val_fraction=1", r"'data.val_fraction': must be in \[0, 1\)"),
        ("data.augment.gamma_p=2", r"'data.augment.gamma_p': must be in \[0, 1\]"),
        ("data.augment.mirror_axes=[0, 3]", r"'data.augment.mirror_axes': must be in \[0, 2\]"),
        ("data.augment.scale_range=[1.4, 0.7]", "low 1.4 is above high 0.7"),
        ("patch_size=[16, 0, 32]", r"'patch_size': must be in \[1, inf\), not 0"),
        ("patch_size=[16, 32]", "expected 3 values"),
    ],
)
def test_value_checks_fail_before_a_run(item, message):
    from medfoundry.training.config import check_config

    with pytest.raises(MedfoundryError, match=message):
        check_config(apply_overrides(TrainConfig(), [item]))


def test_every_range_names_a_numeric_field_and_the_defaults_pass():
    from medfoundry.training.config import RANGES, check_config

    check_config(TrainConfig())
    for key in RANGES:  # a misspelt key would fail here, not silently skip its check
        value = TrainConfig()
        for part in key.split("."):
            value = getattr(value, part)


def test_workflow_configs_embed_the_training_config(tmp_path):
    from medfoundry.workflows.main_job import PipelineConfig
    from medfoundry.workflows.transfer_benchmark import load_bench_config

    bench = load_bench_config("transfer_real")
    assert bench.train.model == "tsfm_s" and bench.train.optim.lr == 0.01
    assert bench.train.batch_size == 4 and bench.train.validation.max_cases == 20
    run = bench.run_config(5, [16, 80, 80], 5)
    assert (run.epochs, run.patch_size, run.validation.every) == (5, [16, 80, 80], 5)
    assert bench.train.epochs != 5 and run.optim is not bench.train.optim  # a copy
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {optim: {lrr: 1}}\n")
    with pytest.raises(MedfoundryError, match="unknown config key 'train.optim.lrr'"):
        load_bench_config(str(bad))
    bad.write_text("directions: [{name: x, pool: [a]}]\n")
    with pytest.raises(MedfoundryError, match="each direction needs name, pool and target"):
        load_bench_config(str(bad))
    main = PipelineConfig(pretrain_steps=40)
    pre = main.run_config(4, 10)
    assert (pre.epochs, pre.iters_per_epoch, pre.batch_size, pre.optim.lr) == (4, 10, 2, 0.01)


def test_a_set_of_axes_is_not_a_range():
    from medfoundry.training.config import check_config

    check_config(from_dict({"data": {"augment": {"mirror_axes": [2, 1]}}}))  # any order
    check_config(apply_overrides(TrainConfig(), ["validation.max_cases=0"]))  # no validation


def test_an_explicit_split_is_used_and_checked():
    from medfoundry.training.setup import _split

    pool = {"cases": [{"id": f"d/c{i}", "dataset": "d"} for i in range(5)]}
    cfg = apply_overrides(TrainConfig(), ["data.train_cases=[d/c1, d/c3]"])
    assert _split(pool, cfg) == {"train": ["d/c1", "d/c3"], "val": ["d/c0", "d/c2", "d/c4"]}
    cfg = apply_overrides(TrainConfig(), ["data.train_cases=[d/c1]", "data.val_cases=[d/c4]"])
    assert _split(pool, cfg) == {"train": ["d/c1"], "val": ["d/c4"]}
    cfg = apply_overrides(TrainConfig(), ["data.val_cases=[d/c0]"])
    assert _split(pool, cfg)["train"] == ["d/c1", "d/c2", "d/c3", "d/c4"]
    for item, message in [
        ("data.train_cases=[d/c9]", "not cases of the pool"),
        ("data.val_cases=[d/c0, d/c1, d/c2, d/c3, d/c4]", "no training case"),
    ]:
        with pytest.raises(MedfoundryError, match=message):
            _split(pool, apply_overrides(TrainConfig(), [item]))
    both = ["data.train_cases=[d/c1]", "data.val_cases=[d/c1]"]
    with pytest.raises(MedfoundryError, match="both train and validate"):
        _split(pool, apply_overrides(TrainConfig(), both))
