"""Copy every compatible pretrained weight into a new model, and say what happened to each tensor.

Rules, by parameter name:

- same name and shape: loaded;
- ``stem.0.weight`` with another number of input channels: adapted (the mean over the pretrained
  image channels, repeated and scaled by ``old / new`` so a stack of similar channels keeps the
  pretrained response); prompt channels (after the image's, see ``prompt_channels`` of a task)
  copied where both models have them, else zero, so a new prompt input starts silent;
- ``bottleneck.pos_embed`` on another token grid (another patch size or stage layout): interpolated;
- ``heads.*``: rows copied for output channels whose class name exists in the pretrained model (same
  structure name; channel names from the models' output descriptions), the other rows newly
  initialised;
- anything else (another depth, width or stage count): skipped, the new model keeps its initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from medfoundry.models.transformer import interpolate_pos_embed


@torch.no_grad()
def transfer_weights(
    model: nn.Module,
    source_state: dict,
    source_channels: list[str],
    target_channels: list[str],
    prompt_channels: tuple[int, int] = (0, 0),
) -> dict:
    """Load ``source_state`` into ``model`` by the rules above (``prompt_channels``: the source's
    and the target's prompt input channels); returns a JSON report with ``loaded``,
    ``adapted``, ``interpolated``, ``skipped`` and ``new`` parameter names, ``head`` (kept and new
    classes) and parameter counts."""
    report = {"loaded": [], "adapted": [], "interpolated": [], "skipped": [], "new": []}
    target = model.state_dict()
    src_row = {n: i for i, n in enumerate(source_channels)}
    kept = [n for n in target_channels if n in src_row]
    for name, value in target.items():
        src = source_state.get(name)
        if src is None:
            report["new"].append(name)
        elif name.startswith("heads."):
            _copy_head(value, src, source_channels, target_channels, src_row, name, report)
        elif name == "stem.0.weight" and src.shape[0] == value.shape[0]:
            _copy_stem(value, src, prompt_channels)
            report["loaded" if src.shape == value.shape else "adapted"].append(name)
        elif src.shape == value.shape:
            value.copy_(src)
            report["loaded"].append(name)
        elif name.endswith("pos_embed") and src.shape[:2] == value.shape[:2]:
            value.copy_(interpolate_pos_embed(src.float(), value.shape[2:]))
            report["interpolated"].append(name)
        else:
            report["skipped"].append(name)
    if not any(n.startswith("heads.") for n in report["loaded"] + report["adapted"]):
        kept = []  # no head tensor came from the source (e.g. not among the loaded groups)
    report["head"] = {"kept": kept, "new": [n for n in target_channels if n not in kept]}
    report["counts"] = {
        k: sum(target[n].numel() for n in report[k])
        for k in ("loaded", "adapted", "interpolated", "skipped", "new")
    }
    report["unused_source"] = sorted(set(source_state) - set(target))
    return report


def _copy_stem(value: torch.Tensor, src: torch.Tensor, prompts: tuple[int, int]) -> None:
    """The stem's ``(F, C_in, 3, 3, 3)`` kernel: image channels as the rules say, then the prompt
    channels (shared ones copied, the others zero)."""
    old, new = src.shape[1] - prompts[0], value.shape[1] - prompts[1]
    if old == new:
        value[:, :new] = src[:, :old]
    else:
        value[:, :new] = src[:, :old].mean(1, keepdim=True).repeat(1, new, 1, 1, 1) * (old / new)
    value[:, new:] = 0.0
    shared = min(prompts)
    value[:, new : new + shared] = src[:, old : old + shared]


def _copy_head(value, src, source_channels, target_channels, src_row, name, report) -> None:
    if src.shape[1:] != value.shape[1:]:  # another feature width: nothing to keep
        report["skipped"].append(name)
        return
    rows = [(t, src_row[n]) for t, n in enumerate(target_channels) if n in src_row]
    if len(src) != len(source_channels) or not rows:
        report["new"].append(name)
        return
    for t, s in rows:
        value[t] = src[s]
    report["loaded" if len(rows) == len(target_channels) else "adapted"].append(name)


def segmentation_part(state: dict, head: dict, channels: list[str]) -> tuple[dict, list[str]]:
    """The weights and output channels of a model, with a ``concat`` head (supervised + SSL) seen as
    the plain segmentation head a segmentation model has: the segmentation part's tensors renamed
    ``heads.parts.<i>.`` -> ``heads.``, the other parts' left out, its channels only. Any other
    head: unchanged."""
    if head.get("kind") != "concat":
        return state, channels
    start = 0
    for i, part in enumerate(head["parts"]):
        if part["kind"] == "segmentation":
            prefix = f"heads.parts.{i}."
            body = {k: v for k, v in state.items() if not k.startswith("heads.")}
            own = {"heads." + k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            return {**body, **own}, channels[start : start + part["num_outputs"]]
        start += part["num_outputs"]
    return state, channels


def only_groups(state: dict, groups: dict[str, list], keep: list[str]) -> dict:
    """``state`` without the tensors of the model's parameter groups (``TSFM.parameter_groups``)
    not in ``keep``: those parameters then keep their new initialisation."""
    dropped = {name for g, named in groups.items() if g not in keep for name, _ in named}
    return {k: v for k, v in state.items() if k not in dropped}
