"""Checkpoint files are data, never code: a crafted file is refused by every command that loads
one; model files hold weights and a description only; files of the previous format still load."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from medfoundry import MedfoundryError
from medfoundry.cli.main import main
from medfoundry.inference.predictor import Predictor
from medfoundry.runs.checkpoint import load_checkpoint, save_checkpoint


class _RunsCommand:
    """Unpickling this runs a shell command (what a crafted ``.pt`` does to ``torch.load``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_pt(path, marker):
    """A file torch.load(weights_only=False) would execute: a checkpoint-like dict with a payload."""
    payload = {"format": "medfoundry.checkpoint/1", "x": _RunsCommand(marker)}
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("command", ["predict", "finetune", "resume"])
def test_a_checkpoint_crafted_to_run_code_is_refused(command, tmp_path, capsys, hippo_dir):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    crafted = _crafted_pt(run / "checkpoints" / "latest.pt", marker)
    argv = {
        "predict": [
            "predict",
            "-m",
            str(crafted),
            "-i",
            str(hippo_dir / "imagesTr"),
            "-o",
            str(tmp_path / "p"),
        ],
        "finetune": [
            "finetune",
            "--from",
            str(crafted),
            "--data",
            str(hippo_dir),
            "-o",
            str(tmp_path / "f"),
        ],
        "resume": ["pretrain", "--resume", str(run)],
    }[command]
    assert main(["-q", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"medfoundry: error: {crafted}: refused: loading it would run code or build objects "
        "(a checkpoint holds tensors and plain data only)"
    )
    assert len(err.splitlines()) == 1
    assert not marker.exists(), "code in the checkpoint ran"
    assert not (tmp_path / "p").exists() and not (tmp_path / "f").exists()


def _safetensors_with_header(path, header: dict, data: bytes = b""):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.mark.parametrize(
    "header, message",
    [
        ({"__metadata__": {"medfoundry": "{not json"}}, "unreadable checkpoint"),
        ({"__metadata__": {"other": "x"}}, "unreadable checkpoint"),
        (
            {"__metadata__": {"medfoundry": json.dumps({"format": "x"})}},
            "not a medfoundry.checkpoint/2 file",
        ),
        (
            {"__metadata__": {"medfoundry": json.dumps({"format": "medfoundry.checkpoint/2"})}},
            "incomplete",
        ),
        (
            {"t": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}},
            "unreadable checkpoint",
        ),
    ],
)
def test_a_damaged_or_foreign_file_is_a_one_line_error(header, message, tmp_path):
    path = _safetensors_with_header(tmp_path / "x.safetensors", header)
    with pytest.raises(MedfoundryError, match=message):
        load_checkpoint(path)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(MedfoundryError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_a_model_file_holds_weights_and_description_and_predicts_the_same(
    pretrained, hippo_dir, tmp_path, capsys
):
    from safetensors import safe_open

    out = tmp_path / "model.safetensors"
    assert main(["-q", "models", "save", str(pretrained), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        keys, meta = list(f.keys()), json.loads(f.metadata()["medfoundry"])
    assert keys and all(k.startswith("model.") for k in keys)  # no optimizer, no random state
    assert meta["kind"] == "model" and "run" not in meta and "state" not in meta
    assert meta["config"]["init_from"] is None and "splits" not in json.dumps(meta)
    best = pretrained / "checkpoints" / "best.safetensors"
    assert out.stat().st_size < 0.6 * best.stat().st_size  # SGD momentum doubles a checkpoint
    from medfoundry.io import read_image

    image = read_image(sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0])
    a = Predictor.from_checkpoint(out, "cpu").predict(image).labels.array
    b = Predictor.from_checkpoint(pretrained, "cpu").predict(image).labels.array
    assert (a == b).all()
    assert main(["-q", "models", "save", str(pretrained), "-o", str(tmp_path / "m.pt")]) == 2
    assert "ends with .safetensors" in capsys.readouterr().err


def test_a_format_1_checkpoint_still_loads_and_predicts(pretrained, hippo_dir, tmp_path):
    """Run folders of the previous version (``torch.save`` of a dict, heads named ``heads.N``)."""
    ckpt = load_checkpoint(pretrained / "checkpoints" / "best.safetensors", training=True)
    m = ckpt.meta
    old = {
        "format": "medfoundry.checkpoint/1",
        "model": {
            **{
                k: m["model"][k]
                for k in ("name", "overrides", "in_channels", "patch_size", "strides")
            },
            "num_classes": m["model"]["head"]["num_outputs"],
            "deep_supervision": False,
            "activation": "sigmoid",
        },
        "state_dict": {k.replace("heads.convs.", "heads."): v for k, v in ckpt.weights.items()},
        "optimizer": ckpt.optimizer,
        "scheduler": m["state"]["scheduler"],
        "step": m["state"]["step"],
        "epoch": 1,
        "best_metric": m["state"]["best_metric"],
        "rng": {"torch": ckpt.rng},
        **{k: m[k] for k in ("config", "plan", "labels", "datasets")},
        **m["run"],
    }
    torch.save(old, tmp_path / "old.pt")
    from medfoundry.io import read_image

    image = read_image(sorted((hippo_dir / "imagesTr").glob("*.nii.gz"))[0])
    a = Predictor.from_checkpoint(tmp_path / "old.pt", "cpu").predict(image).labels.array
    b = Predictor.from_checkpoint(pretrained, "cpu").predict(image).labels.array
    assert (a == b).all()
    loaded = load_checkpoint(tmp_path / "old.pt", training=True)
    assert loaded.meta["task"]["outputs"] == m["task"]["outputs"]
    assert loaded.optimizer["param_groups"] == ckpt.optimizer["param_groups"]


def test_predictor_holds_the_weights_only(pretrained):
    """No optimizer state or second copy of the weights (it held about 3x the weights)."""
    pred = Predictor.from_checkpoint(pretrained, "cpu")
    weights = sum(p.numel() * p.element_size() for p in pred.model.parameters())
    held = _tensor_bytes(pred.__dict__, seen=set())
    assert held == weights


def _tensor_bytes(obj, seen) -> int:
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, torch.nn.Module):
        return sum(_tensor_bytes(t, seen) for t in obj.state_dict(keep_vars=True).values())
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return _tensor_bytes(vars(obj), seen)
    return 0


def test_save_then_load_round_trips_every_part(pretrained, tmp_path):
    ckpt = load_checkpoint(pretrained / "checkpoints" / "latest.safetensors", training=True)
    save_checkpoint(tmp_path / "c.safetensors", ckpt.meta, ckpt.weights, ckpt.optimizer, ckpt.rng)
    again = load_checkpoint(tmp_path / "c.safetensors", training=True)
    assert again.meta == {**ckpt.meta, "medfoundry_version": again.meta["medfoundry_version"]}
    assert all(torch.equal(again.weights[k], v) for k, v in ckpt.weights.items())
    assert torch.equal(again.rng, ckpt.rng)
    a, b = again.optimizer, ckpt.optimizer
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    assert all(
        torch.equal(a["state"][i]["momentum_buffer"], b["state"][i]["momentum_buffer"])
        for i in a["state"]
    )


def test_best_is_written_before_latest(pretrained, tmp_path, monkeypatch):
    """A kill between the two names must not leave a resume point newer than ``best``."""
    from medfoundry.runs.run_folder import CheckpointWriter

    ckpt = load_checkpoint(pretrained / "checkpoints" / "latest.safetensors", training=True)
    writer = CheckpointWriter(tmp_path)

    def killed(self, name, existing):
        raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointWriter, "link", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.save(["latest", "best"], ckpt.meta, ckpt.weights, ckpt.optimizer, ckpt.rng)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["best.safetensors"]
