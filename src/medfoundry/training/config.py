"""Training configuration: typed dataclasses are the schema, YAML presets hold values, ``--set`` overrides.

``apply_overrides(cfg, ["optim.lr=0.01", "data.augment.enabled=false"])`` sets dotted keys; values are
parsed as YAML scalars; an unknown key is a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from medfoundry import MedfoundryError
from medfoundry.data.augment import AugmentConfig


@dataclass
class OptimConfig:
    name: str = "sgd"
    """``sgd`` (Nesterov) or ``adamw``."""
    lr: float = 1e-3
    """Initial learning rate (TSFM: 1e-3), decayed polynomially to 0 over the run."""
    momentum: float = 0.99
    weight_decay: float = 1e-3
    poly_power: float = 0.9
    grad_clip: float = 12.0
    """Gradient norm clip (0: off)."""


@dataclass
class DataConfig:
    fg_fraction: float = 0.33
    """Fraction of patches centred on a foreground voxel of a random valid class."""
    one_dataset_per_batch: bool = True
    """Draw each batch's dataset first (with probability equal to its cases' total sampling
    probability), then all of the batch's cases from it; each case keeps its 1/sqrt-rule probability.
    The per-class batch Dice then always spans the whole batch instead of the 1-3 samples of a mixed
    batch that annotate the class. False: every case drawn independently (mixed batches). No effect
    on a single-dataset pool."""
    num_workers: int = 2
    """Background processes making batches (0: in the training process)."""
    val_fraction: float = 0.2
    """Per dataset, this fraction of case groups is held out for validation."""
    split_seed: int | None = None
    """Seed of the per-dataset train/validation split (default: ``seed``). Fix it to compare training
    seeds on the same validation cases."""
    val_max_cases: int = 20
    """Validate on at most this many held-out cases per dataset (sliding window is costly on CPU)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrainConfig:
    model: str = "tsfm_s"
    """A registered size (``medfoundry models list``)."""
    model_overrides: dict = field(default_factory=dict)
    """Replace size fields, e.g. ``{base_features: 32, blocks_per_stage: [1, 1, 1, 1]}``."""
    epochs: int = 100
    iters_per_epoch: int = 250
    batch_size: int | None = None
    """Default: the plan's."""
    patch_size: list[int] | None = None
    """(Z, Y, X); default: the plan's."""
    seed: int = 0
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1``..."""
    loss: str = "partial"
    """``partial`` (sigmoid BCE + Dice on valid classes; pools) or ``softmax`` (CE + Dice; one dataset)."""
    deep_supervision: bool = False
    grad_checkpointing: bool = False
    amp: bool = True
    """bf16 autocast where the hardware has native bf16: CUDA, and CPUs with AVX512-BF16 or AMX (about
    2x faster than fp32 on this project's CPUs, measured in benchmarks/train_throughput_vs_nnunet.py).
    On a CPU, one bf16 step is first checked in a child process (once per machine and network), as
    oneDNN's bf16 kernels hang on some shapes; where it fails the run trains in fp32 with a warning."""
    channels_last: bool = True
    """Use the channels-last 3D memory layout (faster convolutions with oneDNN/cuDNN); not with FSDP."""
    fsdp: bool = False
    """Shard parameters with FSDP (under torchrun); otherwise DDP."""
    val_every: int = 1
    """Validate every N epochs (0: never)."""
    ckpt_every_steps: int = 50
    """Also write the 'latest' checkpoint every N steps within an epoch."""
    threads: int = 0
    """torch intra-op threads (0: leave torch's default)."""
    freeze: str = "none"
    """Which parameters train: ``none`` (all), ``encoder`` (stem and encoder frozen),
    ``all-but-bottleneck`` (only the Transformer bottleneck and the head train: TSFM's "only the
    Transformer part is adjusted"), ``head-only``. Heads always train."""
    head_warmup_steps: int = 0
    """Train only the head for this many steps first (then what ``freeze`` allows)."""
    init_from: str | None = None
    """Fine-tuning: the checkpoint the initial weights came from (set by ``medfoundry finetune``)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)


def load_preset(name_or_path: str | None) -> TrainConfig:
    """A config from a YAML preset (a bundled name such as ``pretrain_cpu``, or a file path)."""
    cfg = TrainConfig()
    if not name_or_path:
        return cfg
    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
    else:
        res = resources.files("medfoundry").joinpath("presets", f"{name_or_path}.yaml")
        if not res.is_file():
            raise MedfoundryError(
                f"preset '{name_or_path}' not found (neither a file nor a bundled preset)"
            )
        text = res.read_text()
    raw = yaml.safe_load(text) or {}
    return apply_overrides(
        cfg, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in _flatten(raw)]
    )


def apply_overrides(cfg, overrides: list[str]):
    """Set dotted ``key=value`` fields in place (value parsed as YAML, checked against the field type)."""
    for item in overrides:
        if "=" not in item:
            raise MedfoundryError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        obj, parts = cfg, key.strip().split(".")
        for part in parts[:-1]:
            obj = _child(obj, part, key)
        f = _field(obj, parts[-1], key)
        setattr(obj, parts[-1], _coerce(yaml.safe_load(text), f, obj, key))
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


# Fields added after runs were already being saved, whose default changes what a run does: a saved
# config (a checkpoint's) without one gets the value that keeps the behaviour it was saved with.
ADDED_FIELDS = {"data.one_dataset_per_batch": False}


def from_dict(raw: dict) -> TrainConfig:
    """The config saved as ``raw`` (``to_dict``'s output, e.g. from a checkpoint)."""
    values = {**ADDED_FIELDS, **dict(_flatten(raw))}
    return apply_overrides(
        TrainConfig(),
        [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in values.items()],
    )


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_overrides":
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _child(obj, part, key):
    f = _field(obj, part, key)
    value = getattr(obj, f.name)
    if not dataclasses.is_dataclass(value):
        raise MedfoundryError(f"unknown config key '{key}' ('{part}' is not a section)")
    return value


def _field(obj, name, key):
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise MedfoundryError(f"unknown config key '{key}' (known here: {', '.join(fields)})")
    return fields[name]


def _coerce(value, f, obj, key):
    hints = typing.get_type_hints(type(obj))
    hint = hints[f.name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None and (type(None) in args):
        return None
    base = (
        [a for a in args if a is not type(None)][0]
        if origin in (typing.Union, types.UnionType)
        else hint
    )
    try:
        if base is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int and isinstance(value, float) and not value.is_integer():
            raise TypeError  # int(1.5) would silently drop the fraction
        if base in (int, float, str):
            return base(value)
        if base is dict or typing.get_origin(base) is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
        if typing.get_origin(base) is tuple:
            return tuple(value)
        if typing.get_origin(base) is list:
            return list(value)
    except (TypeError, ValueError):
        raise MedfoundryError(
            f"config key '{key}': cannot use {value!r} for a {getattr(base, '__name__', base)}"
        ) from None
    raise MedfoundryError(f"config key '{key}' cannot be set from the command line")
