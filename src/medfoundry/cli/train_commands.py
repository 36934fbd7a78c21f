"""Subcommands that need torch: ``models list|info`` and ``pretrain`` (torch is imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.cli.arg_types import positive_int
from medfoundry.models.sizes import MODEL_SIZES

OBJECTIVES = {"supervised": "segmentation", "ssl": "masked", "both": "segmentation+masked"}
"""``--objective`` -> the training task (``TrainConfig.task``)."""
TASK_NAMES = ("segmentation", "masked", "segmentation+masked", "promptable")
"""``--task`` choices (:data:`medfoundry.tasks.TASKS`; a test keeps them equal)."""


def add_models(sub, common) -> None:
    p = sub.add_parser(
        "models",
        parents=[common],
        help="list model sizes, or describe one",
        description="The TSFM size ladder: parameters, FLOPs per patch, activation memory.",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = msub.add_parser(
        "list", parents=[common], help="every registered size with its parameter count"
    )
    ls.set_defaults(func=_models_list)
    info = msub.add_parser(
        "info", parents=[common], help="parameters, FLOPs and memory of one size at a patch size"
    )
    info.add_argument("name", choices=sorted(MODEL_SIZES), metavar="NAME")
    info.add_argument(
        "--patch",
        type=positive_int,
        nargs=3,
        default=[128, 128, 128],
        metavar=("Z", "Y", "X"),
        help="default 128 128 128",
    )
    info.add_argument("--in-channels", type=positive_int, default=1)
    info.add_argument("--classes", type=positive_int, default=8, help="output channels (default 8)")
    info.add_argument(
        "--batch-size", type=positive_int, default=2, help="for the memory estimate (default 2)"
    )
    info.set_defaults(func=_models_info)
    save = msub.add_parser(
        "save",
        parents=[common],
        help="save a trained model as a shareable model file (weights + JSON, no optimizer)",
        description="Write the model of a checkpoint or run folder (its best, else final, else latest "
        "checkpoint) as one .safetensors file: the weights and the model's description (network, "
        "task and outputs, label space, preprocessing plan, config); no optimizer state, no case ids "
        "or paths. 'medfoundry predict -m FILE' and 'finetune --from FILE' take it.",
    )
    save.add_argument("source", type=Path, metavar="CKPT_OR_RUN")
    save.add_argument("-o", "--out", required=True, type=Path, metavar="FILE.safetensors")
    save.set_defaults(func=_models_save)


def _models_list(a) -> None:
    from medfoundry.models.registry import count_parameters, create_model

    print(f"{'name':<14} {'params':>10} {'stages':>6} {'transformer (width x depth, heads)':>36}")
    for name, size in MODEL_SIZES.items():
        model = create_model(name, 1, 8, device="meta")
        tr = (
            f"{size.transformer_width} x {size.transformer_depth}, {size.transformer_heads}"
            if size.transformer_depth
            else "none (CNN only)"
        )
        print(f"{name:<14} {count_parameters(model) / 1e6:>9.1f}M {len(model.strides):>6} {tr:>36}")


def _models_save(a) -> None:
    from medfoundry.runs.checkpoint import save_model_file

    path = save_model_file(a.source, a.out)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")


def _models_info(a) -> None:
    from medfoundry.models.info import describe_model
    from medfoundry.models.sizes import MIN_FEATURE_MAP_VOX

    if max(a.patch) < 2 * MIN_FEATURE_MAP_VOX:
        raise MedfoundryError(
            f"--patch {a.patch} is too small: the network needs one axis of at least "
            f"{2 * MIN_FEATURE_MAP_VOX} voxels to down-sample"
        )
    d = describe_model(a.name, a.patch, a.in_channels, a.classes, a.batch_size)
    print(
        f"{a.name}: {d['params'] / 1e6:.2f}M parameters ({d['transformer_params'] / 1e6:.2f}M in the Transformer)"
    )
    print(
        f"  patch {a.patch} -> stages {len(d['strides'])}, strides {d['strides']}, features {d['features']}, tokens {d['tokens']}"
    )
    print(
        f"  FLOPs per patch: forward {d['forward_gflop']:.1f} GFLOP, forward+backward {d['train_gflop']:.1f} GFLOP"
    )
    print(
        f"  estimated training memory at batch {a.batch_size}: {d['train_memory_gb']:.2f} GB (fp32)"
    )


def add_pretrain(sub, common) -> None:
    p = sub.add_parser(
        "pretrain",
        parents=[common],
        help="pretrain a TSFM model on a preprocessed pool",
        description="Train on POOL_DIR (after pool build, plan, preprocess) into RUN_DIR. Any config field "
        "can be set with --set key=value (e.g. --set optim.name=adamw --set data.augment.enabled=false). "
        "Under 'torchrun --nproc-per-node N' it trains with DDP (gloo on CPU, NCCL on GPU).",
    )
    p.add_argument(
        "pool_dir", type=Path, nargs="?", metavar="POOL_DIR", help="not needed with --resume"
    )
    p.add_argument("-o", "--out", type=Path, metavar="RUN_DIR", help="new, empty run folder")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue this run exactly from its latest checkpoint (with --epochs N: to a new "
        "length, a finished run included; the learning rate follows the new length's schedule)",
    )
    p.add_argument("--model", choices=sorted(MODEL_SIZES), help="size (default tsfm_s)")
    add_training_flags(p)
    p.set_defaults(func=_pretrain)


def add_training_flags(p) -> None:
    """The training flags that pretrain and finetune share."""
    p.add_argument("--preset", help="a YAML preset (bundled name, e.g. pretrain_cpu, or a file)")
    p.add_argument(
        "--objective",
        choices=sorted(OBJECTIVES),
        help="supervised (the labels; default), ssl (self-supervised masked-volume modelling: "
        "hidden 3D blocks reconstructed from the rest; labels unused) or both (by turns: "
        "supervised on labelled patches, masked modelling on every patch, datasets without labels "
        "included)",
    )
    p.add_argument(
        "--task",
        choices=TASK_NAMES,
        help="what the backbone learns (default segmentation; --objective names the first three): "
        "promptable = automatic segmentation of the classes plus any object given by clicks, a box "
        "and the previous mask, trained with simulated interactions",
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--iters-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, dotted (repeatable)",
    )


def config_from_flags(a, cfg=None, **extra):
    """A TrainConfig from --preset, the shared flags, ``extra`` fields and --set (in that order)."""
    from medfoundry.training.config import apply_overrides, load_preset

    cfg = cfg if cfg is not None and not a.preset else load_preset(a.preset)
    task = getattr(a, "task", None)
    if task and a.objective and OBJECTIVES[a.objective] != task:
        raise MedfoundryError(f"--objective {a.objective} and --task {task} disagree; give one")
    flags = {
        "epochs": a.epochs,
        "iters_per_epoch": a.iters_per_epoch,
        "batch_size": a.batch_size,
        "optim.lr": a.lr,
        "seed": a.seed,
        "device": a.device,
        "task": OBJECTIVES.get(a.objective) or task,
        **extra,
    }
    return apply_overrides(cfg, [f"{k}={v}" for k, v in flags.items() if v is not None] + a.set)


def _pretrain(a) -> None:
    from medfoundry.training.fit import pretrain

    if a.resume:
        others = (
            a.out,
            a.preset,
            a.set,
            a.model,
            a.iters_per_epoch,
            a.batch_size,
            a.lr,
            a.seed,
            a.objective,
            a.task,
        )
        if any(v not in (None, []) for v in (*others, a.device)):
            raise MedfoundryError(
                "--resume continues a run with its own config (only --epochs may change its "
                "length); drop -o, --preset, --set and the other training flags"
            )
        out = pretrain(a.pool_dir, a.resume, resume=True, progress=not a.quiet, epochs=a.epochs)
    else:
        if not a.pool_dir or not a.out:
            raise MedfoundryError("give POOL_DIR and -o RUN_DIR (or --resume RUN_DIR)")
        cfg = config_from_flags(a, model=a.model)
        out = pretrain(a.pool_dir, a.out, cfg, progress=not a.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one line, not one per process
        print(f"{run_summary(out)} -> {out['run_dir']}")


def run_summary(out: dict) -> str:
    """One line on a finished training run (``pretrain``'s result)."""
    loss = "n/a" if out["loss"] is None else f"{out['loss']:.4f}"
    best = out["best_val_mean"]
    best = f"{best:.4f}" if best > float("-inf") else "none (no validation ran)"
    final = out["final_val_mean"]
    metric = out.get("metric", "mean Dice")
    text = f"step {out['step']}: loss {loss}, best validation {metric} {best}"
    if final is not None:
        text += f", final (whole volumes) {final:.4f}"
    if out["data_wait_frac_mean"] is not None:
        text += f", data wait {out['data_wait_frac_mean']:.1%}"
    return text
