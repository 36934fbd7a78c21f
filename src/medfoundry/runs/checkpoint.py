"""Checkpoints and model files: safetensors + JSON, never pickle, written atomically.

A file (format ``medfoundry.checkpoint/2``) holds tensors and one JSON document (the safetensors
header's ``medfoundry`` entry), so loading it runs no code from it, and a reader takes only the tensors
it needs (a ``Predictor`` or fine-tuning never reads optimizer state):

- tensors ``model.<parameter>``: the network's weights; training checkpoints also ``optimizer/<i>``
  (the optimizer state's tensors) and ``rng.torch`` (the CPU random state);
- JSON, every file (:data:`DESCRIPTION_KEYS`, all a model file has): ``format``, ``kind``
  (``checkpoint`` or ``model``), ``medfoundry_version``, ``model`` (the network, see
  ``description`` of :func:`medfoundry.models.registry.create_network`), ``task`` (``name`` and ``outputs``: activation
  and the class name of each output channel), ``labels`` (name -> global id), ``datasets`` (local ->
  global ids, modality), ``plan`` (the preprocessing) and ``config`` (the resolved training config);
- JSON, training checkpoints only: ``run`` (``splits``, ``pool_dir``, ``init`` report,
  ``trainable_parameters``) and ``state`` (``step``, ``epoch``, ``best_metric``, ``scheduler``, and
  ``optimizer``: the optimizer state with each tensor replaced by ``{"__tensor__": i}``).

Batches are a pure function of (seed, step), so ``state.step`` and ``rng.torch`` are the whole
sampler state: a resumed run continues exactly. Files of format 1 (``.pt``, ``torch.save`` of a dict,
before this format) are still read, with ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medfoundry import MedfoundryError, __version__
from medfoundry.utils.atomic import atomic_path

CHECKPOINT_FORMAT = "medfoundry.checkpoint/2"
LEGACY_FORMAT = "medfoundry.checkpoint/1"
SUFFIX = ".safetensors"
DESCRIPTION_KEYS = (
    "format",
    "kind",
    "medfoundry_version",
    "model",
    "task",
    "labels",
    "datasets",
    "plan",
    "config",
)
CHECKPOINT_NAMES = ("final", "best", "latest")
"""A run's checkpoints, in the order one save writes them (``latest``, the resume point, last)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint or model file: the JSON document and the tensors that were asked for."""

    path: Path
    meta: dict
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    """The network's state dict (empty unless loaded with ``weights=True``)."""
    optimizer: dict | None = None
    """The optimizer's state dict (training checkpoints loaded with ``training=True``)."""
    rng: torch.Tensor | None = None

    def description(self) -> dict:
        """The part a model file keeps (no run, no training state)."""
        return {k: self.meta[k] for k in DESCRIPTION_KEYS if k in self.meta}


def save_checkpoint(
    path: str | os.PathLike,
    meta: dict,
    weights: dict[str, torch.Tensor],
    optimizer: dict | None = None,
    rng: torch.Tensor | None = None,
) -> Path:
    """Write a checkpoint (with ``optimizer`` and ``rng``) or a model file (``kind: model``) to
    ``path``; the file appears only once complete."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {**meta, "format": CHECKPOINT_FORMAT, "medfoundry_version": __version__}
    tensors = {f"model.{k}": _plain_tensor(v) for k, v in weights.items()}
    if optimizer is not None:
        skeleton, opt_tensors = _split_tensors(optimizer)
        meta["state"] = {**meta.get("state", {}), "optimizer": skeleton}
        tensors.update({f"optimizer/{i}": _plain_tensor(t) for i, t in enumerate(opt_tensors)})
    if rng is not None:
        tensors["rng.torch"] = rng.clone()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"medfoundry": json.dumps(meta)})
    return path


def load_checkpoint(
    path: str | os.PathLike, weights: bool = True, training: bool = False
) -> Checkpoint:
    """Read a checkpoint or model file (or a run folder's ``latest`` checkpoint): always the JSON,
    the network weights with ``weights``, optimizer and random state with ``training``."""
    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path)
    if not path.is_file():
        raise MedfoundryError(f"{path}: checkpoint not found")
    if path.suffix == ".pt":
        return _load_legacy(path, weights, training)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["medfoundry"])
            _check_meta(path, meta)
            keys = list(f.keys())
            ckpt = Checkpoint(path, meta)
            if weights:
                ckpt.weights = {k[6:]: f.get_tensor(k) for k in keys if k.startswith("model.")}
            if training and meta.get("kind") == "checkpoint":
                tensors = [
                    f.get_tensor(f"optimizer/{i}") for i in range(_count(keys, "optimizer/"))
                ]
                ckpt.optimizer = _join_tensors(meta["state"]["optimizer"], tensors)
                ckpt.rng = f.get_tensor("rng.torch")
    except MedfoundryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file is a user-facing error
        raise MedfoundryError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    return ckpt


def save_model_file(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the model of ``source`` (a checkpoint, a run folder: its best, else final, else latest,
    or a model file) as a shareable model file: weights and description, no optimizer state, no
    run (case ids, paths). ``out`` ends with ``.safetensors``."""
    out = Path(out)
    if out.suffix != SUFFIX:
        raise MedfoundryError(f"{out}: a model file's name ends with {SUFFIX}")
    ckpt = load_checkpoint(resolve_checkpoint(source))
    meta = {**ckpt.description(), "kind": "model"}
    meta["config"] = {**meta["config"], "init_from": None}  # a path on the machine that trained it
    return save_checkpoint(out, meta, ckpt.weights)


def checkpoint_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN_DIR/checkpoints/<name>.safetensors`` (``name``: latest, best or final)."""
    return Path(run_dir) / "checkpoints" / f"{name}{SUFFIX}"


def find_checkpoint(run_dir: str | os.PathLike, name: str) -> Path | None:
    """The run's ``name`` checkpoint if it exists (format 2, else a format-1 ``.pt``), else None."""
    for path in (checkpoint_path(run_dir, name), Path(run_dir) / "checkpoints" / f"{name}.pt"):
        if path.is_file():
            return path
    return None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path:
    path = find_checkpoint(run_dir, "latest")
    if path is None:
        raise MedfoundryError(f"{checkpoint_path(run_dir, 'latest')}: checkpoint not found")
    return path


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint or model file, or the best (else final, else latest) checkpoint of a run folder."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("best", "final", "latest"):
        if (found := find_checkpoint(path, name)) is not None:
            return found
    raise MedfoundryError(f"{path}: no checkpoints/best, final or latest{SUFFIX}")


def _check_meta(path: Path, meta: dict) -> None:
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise MedfoundryError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    missing = [k for k in DESCRIPTION_KEYS if k not in meta]
    if meta.get("kind") == "checkpoint":
        missing += [k for k in ("run", "state") if k not in meta]
    if missing:
        raise MedfoundryError(f"{path}: incomplete {CHECKPOINT_FORMAT} file (no {missing[0]})")


def _count(keys: list[str], prefix: str) -> int:
    return sum(1 for k in keys if k.startswith(prefix))


def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    """A dense, contiguous CPU copy safetensors can store (channels-last weights included)."""
    return t.detach().to("cpu").contiguous().clone()


def _split_tensors(obj, tensors: list | None = None):
    """``obj`` (dicts, lists, tensors, numbers) as JSON, each tensor replaced by its index in the
    returned list; dicts with non-string keys (optimizer state by parameter index) keep their keys."""
    tensors = [] if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return {"__tensor__": len(tensors) - 1}, tensors
    if isinstance(obj, dict):
        items = [(k, _split_tensors(v, tensors)[0]) for k, v in obj.items()]
        if all(isinstance(k, str) for k, _ in items):
            return dict(items), tensors
        return {"__items__": [[k, v] for k, v in items]}, tensors
    if isinstance(obj, list | tuple):
        return [_split_tensors(v, tensors)[0] for v in obj], tensors
    return obj, tensors


def _join_tensors(obj, tensors: list[torch.Tensor]):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: _join_tensors(v, tensors) for k, v in obj["__items__"]}
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _load_legacy(path: Path, weights: bool, training: bool) -> Checkpoint:
    """A format-1 ``.pt`` (``torch.save`` of a dict), read with the restricted unpickler, as format 2."""
    try:
        old = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:  # the restricted unpickler met a global: code or an object
        raise MedfoundryError(
            f"{path}: refused: loading it would run code or build objects (a checkpoint holds "
            "tensors and plain data only)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a damaged file is a user-facing error
        raise MedfoundryError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from None
    if not isinstance(old, dict) or old.get("format") != LEGACY_FORMAT:
        raise MedfoundryError(f"{path}: not a medfoundry checkpoint")
    try:
        meta = _legacy_meta(old)
    except (KeyError, TypeError) as exc:
        raise MedfoundryError(f"{path}: incomplete {LEGACY_FORMAT} file ({exc!r})") from None
    ckpt = Checkpoint(path, meta)
    if weights:
        ckpt.weights = {_legacy_name(k): v for k, v in old["state_dict"].items()}
    if training:
        opt = old["optimizer"]  # keyed by parameter index, or (FSDP) by parameter name
        ckpt.optimizer = {
            "state": {_legacy_name(k): v for k, v in opt["state"].items()},
            "param_groups": [
                {**g, "params": [_legacy_name(p) for p in g["params"]]} for g in opt["param_groups"]
            ],
        }
        ckpt.rng = old["rng"]["torch"]
    return ckpt


def _legacy_name(key):
    """Format 1 kept the segmentation head's convolutions as ``heads.<level>``."""
    return re.sub(r"^heads\.(\d+)\.", r"heads.convs.\1.", key) if isinstance(key, str) else key


def _legacy_meta(old: dict) -> dict:
    """The JSON document of format 2 for a format-1 checkpoint dict."""
    activation = old["model"]["activation"]
    # Format 1 named no output channels: segmentation's order, foreground ids ascending (softmax:
    # background first), as medfoundry.tasks.channel_names (a layer above this one) gives them.
    names = [n for n, i in sorted(old["labels"].items(), key=lambda kv: kv[1]) if i != 0]
    channels = names if activation == "sigmoid" else ["background", *names]
    model = {k: old["model"][k] for k in ("name", "in_channels", "patch_size", "strides")}
    model["overrides"] = old["model"].get("overrides", {})
    model["head"] = {  # format 1 had one head kind, its fields in the model entry
        "kind": "segmentation",
        "num_outputs": old["model"]["num_classes"],
        "deep_supervision": old["model"]["deep_supervision"],
    }
    meta = {
        **{k: old[k] for k in ("labels", "datasets", "plan", "config")},
        "model": model,
        "format": LEGACY_FORMAT,
        "kind": "checkpoint",
        "medfoundry_version": old.get("medfoundry_version"),
        "task": {
            "name": "segmentation",
            "outputs": {"activation": activation, "channels": channels},
        },
        "run": {k: old.get(k) for k in ("splits", "pool_dir", "init", "trainable_parameters")},
        "state": {k: old[k] for k in ("step", "epoch", "best_metric", "scheduler")},
    }
    return meta
