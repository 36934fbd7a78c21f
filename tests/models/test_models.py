"""Every registered size: builds on meta with the documented size; the small ones run, learn and
checkpoint identically; position embeddings interpolate to other patch sizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medfoundry.models.blocks import Upsample
from medfoundry.models.registry import (
    count_parameters,
    create_model,
    create_model_from_description,
    list_models,
)
from medfoundry.models.transformer import interpolate_pos_embed
from medfoundry.models.tsfm import PARAMETER_GROUPS

SMALL = ["tsfm_test", "tsfm_test_cnn"]
PATCH = (16, 32, 32)


@pytest.mark.parametrize("name", list_models())
def test_every_size_builds_on_meta(name):
    model = create_model(name, 1, 4, device="meta")
    assert count_parameters(model) > 0
    assert all(p.device.type == "meta" for p in model.parameters())


def test_parameter_counts_of_the_ladder():
    counts = {
        n: count_parameters(create_model(n, 1, 8, device="meta"))
        for n in ("tsfm_s", "tsfm_b", "tsfm_l", "tsfm_h")
    }
    assert counts["tsfm_s"] < counts["tsfm_b"] < counts["tsfm_l"] < counts["tsfm_h"]
    assert 1.55e9 < counts["tsfm_h"] < 1.75e9  # TSFM's ~1.6B
    vit_b = sum(
        p.numel()
        for p in create_model("tsfm_b", 1, 8, device="meta").bottleneck.layers.parameters()
    )
    assert 84e6 < vit_b < 86e6  # 12 ViT-Base layers (width 768, MLP 3072): 85.0M
    assert (
        count_parameters(create_model("tsfm_b_cnn", 1, 8, device="meta")) < counts["tsfm_b"] - 80e6
    )


@pytest.mark.parametrize("name", SMALL)
def test_forward_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, 2, 3, patch_size=PATCH)
    y = model(torch.randn(2, 2, *PATCH))
    assert y.shape == (2, 3, *PATCH)
    y.square().mean().backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing


@pytest.mark.parametrize("name", SMALL)
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, 1, 2, patch_size=PATCH)
    x = torch.randn(1, 1, *PATCH)
    ref = model(x)
    ref.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)


def test_deep_supervision_outputs_full_resolution_first():
    model = create_model("tsfm_test", 1, 2, patch_size=PATCH, deep_supervision=True)
    outs = model(torch.randn(1, 1, *PATCH))
    assert outs[0].shape[2:] == PATCH and len(outs) == len(model.strides) - 1
    assert all(a.shape[-1] >= b.shape[-1] for a, b in zip(outs, outs[1:], strict=False))


def test_other_patch_sizes_interpolate_the_position_embedding():
    torch.manual_seed(0)
    model = create_model("tsfm_test", 1, 2, patch_size=PATCH).eval()
    pos = model.bottleneck.pos_embed
    grid = model.bottleneck.grid_zyx
    assert interpolate_pos_embed(pos, grid) is pos  # the pretraining grid is used as is
    bigger = (32, 64, 48)
    y = model(torch.randn(1, 1, *bigger))
    assert y.shape == (1, 2, *bigger) and torch.isfinite(y).all()
    new_grid = tuple(b // (p // g) for b, p, g in zip(bigger, PATCH, grid, strict=True))
    resized = interpolate_pos_embed(pos, new_grid)
    assert resized.shape[2:] == new_grid
    # The interpolated embedding matters: a different embedding changes the output.
    with torch.no_grad():
        model.bottleneck.pos_embed.mul_(0)
    assert not torch.allclose(model(torch.ones(1, 1, *bigger)), y)


def test_upsample_conv_first_equals_interpolate_first():
    torch.manual_seed(0)
    up = Upsample(8, 4)
    x = torch.randn(1, 8, 3, 5, 4)
    size = (6, 10, 8)
    slow = F.conv3d(
        F.interpolate(x, size=size, mode="trilinear", align_corners=False),
        up.proj.weight,
        up.proj.bias,
    )
    torch.testing.assert_close(up(x, size), slow, atol=1e-5, rtol=1e-5)


def test_the_model_declares_its_parameter_groups_and_shard_units():
    model = create_model("tsfm_test", 1, 3, patch_size=PATCH, deep_supervision=True)
    groups = model.parameter_groups()
    assert tuple(groups) == PARAMETER_GROUPS
    names = [n for params in groups.values() for n, _ in params]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each exactly once
    prefixes = {"stem": "stem.", "encoder": "encoder.", "bottleneck": "bottleneck."}
    prefixes |= {"decoder": ("up.", "decoder."), "heads": "heads."}
    assert all(n.startswith(prefixes[g]) for g, ps in groups.items() for n, _ in ps)
    size = model.size  # FSDP units: every residual block and Transformer layer
    expected = sum(size.blocks_per_stage) + 3 * size.decoder_blocks + size.transformer_depth
    assert len(model.shard_units()) == expected == 9


def test_a_built_network_describes_itself():
    torch.manual_seed(0)
    model = create_model("tsfm_test", 2, 3, PATCH, deep_supervision=True, base_features=4)
    assert model.description["head"] == {
        "kind": "segmentation",
        "num_outputs": 3,
        "deep_supervision": True,
    }
    torch.manual_seed(0)
    again = create_model_from_description(model.description)
    assert again.description == model.description
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
