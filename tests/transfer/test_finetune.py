"""Fine-tuning on real data: what is loaded, kept, adapted and new; freeze policies; head warm-up."""

from __future__ import annotations

import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.models.registry import create_model
from medfoundry.runs.checkpoint import load_checkpoint
from medfoundry.tasks import channel_names
from medfoundry.training.config import TrainConfig, apply_overrides
from medfoundry.transfer.finetune import finetune
from medfoundry.transfer.weights import transfer_weights
from tests.conftest import FAST_FIT, copy_hippo_cases


@pytest.fixture(scope="module")
def hippo_copy(hippo_dir, tmp_path_factory):
    """Eight real hippocampus cases in MSD layout (names from its dataset.json: anterior, posterior)."""
    return copy_hippo_cases(hippo_dir, tmp_path_factory.mktemp("hippo"), n=8)


def _ft(source, data, out, extra=()):
    cfg = apply_overrides(TrainConfig(), [*FAST_FIT, *extra])
    return finetune(source, data, out, cfg, jobs=1, progress=False)


def test_new_labels_get_a_new_head_and_the_body_is_loaded(pretrained, hippo_copy, tmp_path):
    out = _ft(pretrained, hippo_copy, tmp_path / "ft")
    init = out["init"]
    assert init["head"] == {"kept": [], "new": ["anterior", "posterior"]}
    assert "heads.convs.0.weight" in init["new"] and not init["skipped"]
    assert init["counts"]["loaded"] > 0.95 * sum(init["counts"].values())
    src = load_checkpoint(pretrained / "checkpoints" / "best.safetensors").weights
    ft = load_checkpoint(tmp_path / "ft" / "checkpoints" / "final.safetensors")
    assert ft.meta["run"]["init"]["source"].endswith("best.safetensors")
    assert ft.meta["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    # Trained 3 steps from the pretrained weights: close to them, not equal, not re-initialised.
    w0, w1 = src["stem.0.weight"], ft.weights["stem.0.weight"]
    assert 0 < (w1 - w0).abs().max() < 0.1 * w0.abs().max()
    with pytest.raises(MedfoundryError, match="not empty"):
        _ft(pretrained, hippo_copy, tmp_path / "ft")


def test_same_structure_names_keep_the_head(pretrained, hippo_copy, tmp_path):
    pool = tmp_path / "one.yaml"
    pool.write_text(
        f"name: h\ndatasets:\n  - name: hippocampus\n    root: {hippo_copy}\n"
        "    label_map: {1: hippocampus_anterior, 2: hippocampus_posterior}\n"
    )
    out = _ft(pretrained, pool, tmp_path / "ft", ["freeze=head-only"])
    assert out["init"]["head"] == {
        "kept": ["hippocampus_anterior", "hippocampus_posterior"],
        "new": [],
    }
    src = load_checkpoint(pretrained / "checkpoints" / "best.safetensors")
    ft = load_checkpoint(tmp_path / "ft" / "checkpoints" / "final.safetensors").weights
    labels = src.meta["labels"]
    rows = [labels["hippocampus_anterior"] - 1, labels["hippocampus_posterior"] - 1]
    # head-only: every body weight is exactly the pretrained one; the kept head rows moved a little.
    assert all(torch.equal(ft[k], src.weights[k]) for k in ft if not k.startswith("heads."))
    start = src.weights["heads.convs.0.weight"][rows]
    assert not torch.equal(ft["heads.convs.0.weight"], start)
    assert (ft["heads.convs.0.weight"] - start).abs().max() < 0.05


def test_encoder_freeze_and_head_warmup(pretrained, hippo_copy, tmp_path):
    out = _ft(pretrained, hippo_copy, tmp_path / "enc", ["freeze=encoder"])
    src = load_checkpoint(pretrained / "checkpoints" / "best.safetensors").weights
    ft = load_checkpoint(tmp_path / "enc" / "checkpoints" / "final.safetensors").weights
    enc = [k for k in ft if k.startswith(("stem.", "encoder."))]
    assert enc and all(torch.equal(ft[k], src[k]) for k in enc)
    assert not torch.equal(ft["bottleneck.proj_in.weight"], src["bottleneck.proj_in.weight"])
    assert out["step"] == 3
    # Warm-up longer than the run: only the head ever changes (reusing the preprocessed target).
    _ft(pretrained, tmp_path / "enc" / "target", tmp_path / "warm", ["head_warmup_steps=10"])
    warm = load_checkpoint(tmp_path / "warm" / "checkpoints" / "final.safetensors").weights
    assert all(torch.equal(warm[k], src[k]) for k in warm if not k.startswith("heads."))


def test_stem_channels_and_position_embeddings_adapt():
    torch.manual_seed(0)
    src = create_model("tsfm_test", 1, 3, patch_size=[32, 64, 64])
    dst = create_model("tsfm_test", 2, 2, patch_size=[16, 32, 32])
    report = transfer_weights(
        dst,
        src.state_dict(),
        list(channel_names({"background": 0, "a": 1, "b": 2, "c": 3}, "sigmoid")),
        list(channel_names({"background": 0, "c": 1, "new": 2}, "sigmoid")),
    )
    assert report["adapted"][0] == "stem.0.weight"
    assert report["interpolated"] == ["bottleneck.pos_embed"]
    assert report["head"] == {"kept": ["c"], "new": ["new"]}
    s = src.state_dict()
    torch.testing.assert_close(dst.stem[0].weight[:, 0], s["stem.0.weight"][:, 0] / 2)
    torch.testing.assert_close(dst.heads.convs[0].weight[0], s["heads.convs.0.weight"][2])
    # A two-channel image of identical channels gives the pretrained stem response.
    x = torch.randn(1, 1, 16, 32, 32)
    torch.testing.assert_close(dst.stem[0](x.repeat(1, 2, 1, 1, 1)), src.stem[0](x))


def test_fine_tuning_does_not_keep_the_source_weights_alive(
    pretrained, hippo_copy, tmp_path, monkeypatch
):
    """The source checkpoint's tensors are gone once copied into the new model (they used to stay
    referenced for the whole run)."""
    import gc
    import weakref

    from medfoundry.runs import checkpoint
    from medfoundry.training import fit as fit_module

    refs, real_load, real_fit = [], checkpoint.load_checkpoint, fit_module.fit

    def recording_load(*a, **k):
        ckpt = real_load(*a, **k)
        refs.extend(weakref.ref(t) for t in ckpt.weights.values())
        return ckpt

    def checking_fit(*a, **k):
        gc.collect()
        assert refs and all(r() is None for r in refs), "source weights still referenced"
        return real_fit(*a, **k)

    monkeypatch.setattr("medfoundry.transfer.finetune.load_checkpoint", recording_load)
    monkeypatch.setattr(fit_module, "fit", checking_fit)
    _ft(pretrained, hippo_copy, tmp_path / "ft")


def test_only_the_chosen_groups_transfer_and_the_body_learns_slower(
    pretrained, hippo_copy, tmp_path
):
    extra = ["init_groups=[stem, encoder, bottleneck]", "optim.body_lr_scale=0.25"]
    out = _ft(pretrained, hippo_copy, tmp_path / "enc", extra)
    init = out["init"]
    assert any(k.startswith("decoder.") for k in init["new"]) and init["head"]["kept"] == []
    assert not any(k.startswith(("decoder.", "up.")) for k in init["loaded"])
    assert any(k.startswith("encoder.") for k in init["loaded"])
    ckpt = load_checkpoint(tmp_path / "enc" / "checkpoints" / "latest.safetensors", training=True)
    # One optimizer group per parameter group, the body at a quarter of the head's rate.
    lrs = [g["lr"] for g in ckpt.optimizer["param_groups"]]
    assert len(lrs) == 5 and lrs[-1] == pytest.approx(4 * lrs[0])


def test_prompt_inputs_start_silent_and_carry_over_between_promptable_models():
    torch.manual_seed(0)
    seg = create_model("tsfm_test", 1, 2, patch_size=[16, 32, 32])
    prompt = create_model("tsfm_test", 5, 3, patch_size=[16, 32, 32])  # 1 image + 4 prompt maps
    names = ["a", "b"]
    report = transfer_weights(prompt, seg.state_dict(), names, [*names, "p"], (0, 4))
    assert "stem.0.weight" in report["adapted"]
    w = prompt.stem[0].weight
    torch.testing.assert_close(w[:, :1], seg.stem[0].weight)  # the image channel as it was
    assert w[:, 1:].abs().sum() == 0  # prompts start silent: the automatic output is unchanged
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        zeros = torch.zeros(1, 4, 16, 32, 32)
        torch.testing.assert_close(prompt(torch.cat([x, zeros], 1))[:, :2], seg(x))
    # promptable -> promptable: the prompt kernels are copied; -> segmentation: left out.
    again = create_model("tsfm_test", 5, 3, patch_size=[16, 32, 32])
    with torch.no_grad():
        prompt.stem[0].weight[:, 1:] = 1.0
    transfer_weights(again, prompt.state_dict(), [*names, "p"], [*names, "p"], (4, 4))
    torch.testing.assert_close(again.stem[0].weight, prompt.stem[0].weight)
    back = create_model("tsfm_test", 1, 2, patch_size=[16, 32, 32])
    transfer_weights(back, prompt.state_dict(), [*names, "p"], names, (4, 0))
    torch.testing.assert_close(back.stem[0].weight, prompt.stem[0].weight[:, :1])


def test_fine_tuning_a_segmentation_model_into_a_promptable_one(pretrained, hippo_copy, tmp_path):
    out = _ft(pretrained, hippo_copy, tmp_path / "ft", ["task=promptable"])
    meta = load_checkpoint(tmp_path / "ft", weights=False).meta
    assert meta["task"]["name"] == "promptable" and out["step"] == 3
    assert meta["model"]["in_channels"] == 5
    assert "stem.0.weight" in out["init"]["adapted"]
