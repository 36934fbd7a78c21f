"""``classify train | evaluate | predict``: image classification on the TSFM backbone."""

from __future__ import annotations

from pathlib import Path

from medfoundry.cli.arg_types import positive_int
from medfoundry.data.classification import SPLITS as SPLIT_CHOICES
from medfoundry.models.sizes import MODEL_SIZES


def add_classify(sub, common) -> None:
    p = sub.add_parser(
        "classify",
        parents=[common],
        help="train, evaluate and run image classifiers (2D and 3D) on the TSFM backbone",
        description="Binary, multi-class and multi-label classification of 2D images (one-slice "
        "volumes) and 3D volumes. Data: a MedMNIST .npz ({split}_images, {split}_labels) or a folder "
        "with one CSV (case,label[,split]; multi-label: classes joined by ';') and the images.",
    )
    csub = p.add_subparsers(dest="classify_command", metavar="ACTION", required=True)
    _add_train(csub, common)
    _add_evaluate(csub, common)
    _add_predict(csub, common)


def _add_train(csub, common) -> None:
    t = csub.add_parser(
        "train",
        parents=[common],
        help="train a classifier (from scratch or from any medfoundry checkpoint)",
        description="Train on the data's train split, select the checkpoint on its val split "
        "(AUC-ROC), choose the decision threshold there (Youden's J, or --target-sensitivity), "
        "and write RUN/model.safetensors plus RUN/val/ (summary.json, metrics.csv, predictions.csv, "
        "ROC/PR/reliability plots). A test split is never read. Rerun the same command to resume.",
    )
    t.add_argument("--data", required=True, type=Path, metavar="FILE_OR_DIR")
    t.add_argument("-o", "--out", required=True, type=Path, metavar="RUN")
    t.add_argument(
        "--model",
        choices=sorted(MODEL_SIZES),
        default="tsfm_test",
        help="size (default tsfm_test: on 28x28 images a wider Transformer bottleneck costs 20x the "
        "time on a CPU; use tsfm_s and up on a GPU)",
    )
    t.add_argument(
        "--epochs", type=positive_int, default=20, help="passes over the training images"
    )
    t.add_argument(
        "--iters-per-epoch",
        type=positive_int,
        help="steps per epoch (default: one pass over the training images)",
    )
    t.add_argument("--batch-size", type=positive_int, help="default: from the image size")
    t.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    t.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="CKPT",
        help="initialise the backbone from a checkpoint, model file or run folder",
    )
    t.add_argument(
        "--finetune",
        choices=("full", "partial", "linear"),
        default="full",
        help="with --from: train everything (full), the bottleneck and head (partial), or the "
        "head only (linear probe)",
    )
    t.add_argument(
        "--target-sensitivity",
        type=float,
        metavar="S",
        help="choose the threshold reaching this validation sensitivity instead of Youden's J",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.set_defaults(func=_train)


def _add_evaluate(csub, common) -> None:
    e = csub.add_parser(
        "evaluate",
        parents=[common],
        help="clinical metrics with bootstrap 95%% intervals on any split of any data",
        description="Write OUT/summary.json (each metric with its bootstrap 95%% interval, the "
        "confusion matrix, calibration), OUT/metrics.csv, OUT/predictions.csv and ROC, PR, "
        "reliability and confusion-matrix plots.",
    )
    e.add_argument("-m", "--model", required=True, type=Path, metavar="RUN_OR_MODEL")
    e.add_argument("--data", required=True, type=Path, metavar="FILE_OR_DIR")
    e.add_argument("--split", choices=SPLIT_CHOICES, default="test")
    e.add_argument("-o", "--out", required=True, type=Path, metavar="OUT")
    e.set_defaults(func=_evaluate)


def _add_predict(csub, common) -> None:
    q = csub.add_parser(
        "predict",
        parents=[common],
        help="class probabilities and calls for every image of a split (labels not needed)",
    )
    q.add_argument("-m", "--model", required=True, type=Path, metavar="RUN_OR_MODEL")
    q.add_argument("--data", required=True, type=Path, metavar="FILE_OR_DIR")
    q.add_argument("--split", choices=SPLIT_CHOICES, default="test")
    q.add_argument("-o", "--out", required=True, type=Path, metavar="OUT.csv")
    q.set_defaults(func=_predict)


def _train(a) -> None:
    import math

    from medfoundry import MedfoundryError
    from medfoundry.data.classification import plan_batch_size, read_split
    from medfoundry.training.config import TrainConfig, apply_overrides
    from medfoundry.workflows.classify import train_classifier

    if a.target_sensitivity is not None and not 0 < a.target_sensitivity <= 1:
        raise MedfoundryError("--target-sensitivity must be in (0, 1]")
    cfg = TrainConfig(model=a.model, epochs=a.epochs, seed=a.seed, device=a.device)
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", a.lr, 0.05
    cfg.data.num_workers, cfg.ckpt_every_steps = 0, 200
    cfg.batch_size = a.batch_size
    apply_overrides(cfg, a.set)
    if a.iters_per_epoch:
        cfg.iters_per_epoch = a.iters_per_epoch
    elif not (a.out / "checkpoints").is_dir():  # one pass over the training images
        train = read_split(a.data, "train")
        batch = cfg.batch_size or plan_batch_size(train.images.shape[2:])
        n = len(train.cases)
        cfg.iters_per_epoch = max(1, math.ceil(n / batch))
    out = train_classifier(
        a.data, a.out, cfg, a.source, a.finetune, a.target_sensitivity, progress=not a.quiet
    )
    s = out["summary"]
    auc, acc = s["auc_roc"]["value"], s["accuracy"]["value"]
    print(
        f"validation: AUC-ROC {auc:.4f} (95% CI {_ci(s['auc_roc'])}), accuracy {acc:.4f} "
        f"(95% CI {_ci(s['accuracy'])}), threshold {out['thresholds']} -> "
        f"{a.out / 'model.safetensors'}, {a.out / 'val'}"
    )


def _evaluate(a) -> None:
    from medfoundry.workflows.classify import evaluate_classifier

    s = evaluate_classifier(a.model, a.data, a.split, a.out)
    keys = ("auc_roc", "auc_pr", "accuracy", "sensitivity", "specificity")
    text = ", ".join(
        f"{k} {s[k]['value']:.4f} ({_ci(s[k])})" for k in keys if s[k]["value"] is not None
    )
    print(f"{a.split} (n = {s['n']}): {text} -> {a.out}")


def _predict(a) -> None:
    from medfoundry.workflows.classify import predict_classifier

    path = predict_classifier(a.model, a.data, a.split, a.out)
    print(f"wrote {path}")


def _ci(m: dict) -> str:
    lo, hi = m["ci95"]
    return "n/a" if lo is None else f"{lo:.3f}-{hi:.3f}"
