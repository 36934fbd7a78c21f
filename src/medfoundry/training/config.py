"""Training configuration: typed dataclasses are the schema, YAML presets hold values, ``--set`` overrides.

``apply_overrides(cfg, ["optim.lr=0.01", "data.augment.enabled=false"])`` sets dotted keys; values are
parsed as YAML scalars and checked against the field's type (choices are ``Literal`` types) once, in
:mod:`medfoundry.utils.typed_config`; an unknown key is a one-line error naming it. Workflow configs
(the main job, the transfer benchmark) embed a :class:`TrainConfig` as a section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from medfoundry import MedfoundryError
from medfoundry.data.augment_config import AUGMENT_RANGES, AugmentConfig
from medfoundry.utils import typed_config

LossName = Literal["partial", "softmax"]
FreezePolicy = Literal["none", "encoder", "all-but-bottleneck", "head-only"]
ParameterGroup = Literal["stem", "encoder", "bottleneck", "decoder", "heads"]
TaskName = Literal[
    "segmentation",
    "masked",
    "segmentation+masked",
    "promptable",
    "classification",
    "classification-multilabel",
]
"""The registered tasks (:data:`medfoundry.tasks.TASKS`; a test keeps the two equal)."""


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    """``sgd`` (Nesterov) or ``adamw``."""
    lr: float = 1e-3
    """Initial learning rate (TSFM: 1e-3), decayed polynomially to 0 over the run."""
    momentum: float = 0.99
    weight_decay: float = 1e-3
    poly_power: float = 0.9
    grad_clip: float = 12.0
    """Gradient norm clip (0: off)."""
    body_lr_scale: float = 1.0
    """Fine-tuning: the learning rate of everything outside the head, as a fraction of ``lr`` (the
    head, new or kept, learns at ``lr``); 1: one rate for all."""
    layer_decay: float = 1.0
    """Layer-wise decay: each parameter group further from the head (decoder, bottleneck, encoder,
    stem) learns at this fraction of the next one's rate, on top of ``body_lr_scale``; 1: off."""


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
    train_cases: list[str] | None = None
    """An explicit split instead of the seeded one: these case ids (``dataset/case``) train (e.g. n
    labelled cases of a few-shot experiment); with ``val_cases`` unset, every other case validates."""
    val_cases: list[str] | None = None
    """These case ids validate; with ``train_cases`` unset, every other case trains."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ValidationConfig:
    """nnU-Net's split of the work: a cheap, bounded check during training, the full one at the end."""

    every: int = 1
    """Validate every N epochs during training (0: never); the best checkpoint follows it."""
    mode: Literal["patch", "full"] = "patch"
    """During training: ``patch`` scores a fixed set of validation patches (``patches`` per dataset,
    drawn once like training patches, without augmentation) with one Dice per dataset and class from
    the voxel counts summed over all patches (nnU-Net's pseudo Dice): its cost does not depend on the
    size of the volumes. ``full``: sliding-window prediction of whole validation volumes each time."""
    patches: int = 20
    """Validation patches per dataset in ``patch`` mode."""
    final: bool = True
    """After the last step, validate the final weights on whole volumes (sliding window, Dice per case
    with :func:`medfoundry.evaluation.dice_score` as ``medfoundry evaluate``, mean over cases): the
    run's reported figure. Its cost grows with the volumes, once."""
    max_cases: int = 20
    """Whole-volume validation uses at most this many held-out cases per dataset (patch mode draws its
    patches from the same cases)."""


@dataclass
class TrainConfig:
    task: TaskName = "segmentation"
    """What the backbone is trained for (its head, loss, batches and decoding): ``segmentation``
    (supervised, the pool's labels) or ``masked`` (self-supervised masked-volume modelling: hidden
    3D blocks reconstructed from the rest; labels unused) or ``segmentation+masked`` (both, by turns:
    supervised on labelled patches, masked modelling on every patch) or ``promptable`` (automatic
    segmentation of the classes and of any object given by clicks, a box and the previous mask;
    :mod:`medfoundry.tasks.promptable`). ``--objective supervised|ssl|both`` or ``--task`` sets it."""
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
    loss: LossName = "partial"
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
    ckpt_every_steps: int = 50
    """Also write the 'latest' checkpoint every N steps within an epoch."""
    threads: int = 0
    """torch intra-op threads (0: leave torch's default)."""
    freeze: FreezePolicy = "none"
    """Which parameters train: ``none`` (all), ``encoder`` (stem and encoder frozen),
    ``all-but-bottleneck`` (only the Transformer bottleneck and the head train: TSFM's "only the
    Transformer part is adjusted"), ``head-only``. Heads always train."""
    head_warmup_steps: int = 0
    """Train only the head for this many steps first (then what ``freeze`` allows)."""
    init_groups: list[ParameterGroup] = field(
        default_factory=lambda: ["stem", "encoder", "bottleneck", "decoder", "heads"]
    )
    """Fine-tuning: the parameter groups whose pretrained weights are loaded; the others keep their
    random initialisation (e.g. without ``decoder`` and ``heads``: only the encoder side
    transfers)."""
    init_from: str | None = None
    """Fine-tuning: the checkpoint the initial weights came from (set by ``medfoundry finetune``)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


RENAMED = {"val_every": "validation.every", "data.val_max_cases": "validation.max_cases"}
"""Keys of older versions and their names now (saved configs are read with them)."""

ADDED_FIELDS = {
    "data.one_dataset_per_batch": False,
    "validation.mode": "full",
    "validation.final": False,
}
"""Fields added after runs were already being saved, whose default changes what a run does: a saved
config (a checkpoint's) without one gets the value that keeps the behaviour it was saved with."""

RANGES = {
    "epochs": "[1, inf)",
    "iters_per_epoch": "[1, inf)",
    "batch_size": "[1, inf)",
    "patch_size": "[1, inf)",
    "seed": "[0, inf)",
    "ckpt_every_steps": "[1, inf)",
    "threads": "[0, inf)",
    "head_warmup_steps": "[0, inf)",
    "optim.lr": "(0, inf)",
    "optim.momentum": "[0, 1)",
    "optim.weight_decay": "[0, inf)",
    "optim.poly_power": "[0, inf)",
    "optim.grad_clip": "[0, inf)",
    "optim.body_lr_scale": "(0, 1]",
    "optim.layer_decay": "(0, 1]",
    "data.fg_fraction": "[0, 1]",
    "data.num_workers": "[0, inf)",
    "data.val_fraction": "[0, 1)",
    "data.split_seed": "[0, inf)",
    "validation.every": "[0, inf)",
    "validation.patches": "[0, inf)",
    "validation.max_cases": "[0, inf)",
    **{f"data.augment.{k}": v for k, v in AUGMENT_RANGES.items()},
}
"""Values no type expresses (intervals: a bracket includes its end); checked by :func:`check_config`."""


def load_preset(name_or_path: str | None) -> TrainConfig:
    """A config from a YAML preset (a bundled name such as ``pretrain_cpu``, or a file path)."""
    if not name_or_path:
        return TrainConfig()
    return typed_config.config_from_dict(TrainConfig, read_preset(name_or_path), renamed=RENAMED)


def read_preset(name_or_path: str) -> dict:
    """The mapping in a YAML file, or in a bundled preset of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return typed_config.load_yaml_mapping(path.read_text(), str(path))
    res = resources.files("medfoundry").joinpath("presets", f"{name_or_path}.yaml")
    if not res.is_file():
        raise MedfoundryError(
            f"preset '{name_or_path}' not found (neither a file nor a bundled preset)"
        )
    return typed_config.load_yaml_mapping(res.read_text(), f"preset '{name_or_path}'")


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Set dotted ``key=value`` fields in place (value parsed as YAML, checked against the field type)."""
    return typed_config.apply_overrides(cfg, overrides, renamed=RENAMED)


def to_dict(cfg: TrainConfig) -> dict:
    return typed_config.config_to_dict(cfg)


def from_dict(raw: dict) -> TrainConfig:
    """The config saved as ``raw`` (``to_dict``'s output, e.g. from a checkpoint of any version)."""
    cfg = TrainConfig()
    for key, value in ADDED_FIELDS.items():
        typed_config.set_dotted(cfg, key, value)
    return typed_config.update_config(cfg, raw, renamed=RENAMED)


def check_config(cfg: TrainConfig) -> None:
    """Value checks no type expresses (:data:`RANGES`); one line each, before anything is written."""
    typed_config.check_ranges(cfg, RANGES)
    if cfg.patch_size is not None and len(cfg.patch_size) != 3:
        raise MedfoundryError(
            f"config key 'patch_size': expected 3 values (Z, Y, X), got {cfg.patch_size}"
        )
