"""Subcommands after pretraining: ``finetune``, ``predict`` and ``evaluate`` (torch imported lazily)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.cli.arg_types import (
    add_output_type,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from medfoundry.cli.explain_commands import add_benchmark_uncertainty
from medfoundry.cli.interactive_commands import add_benchmark_interactive
from medfoundry.cli.train_commands import add_training_flags, config_from_flags, run_summary
from medfoundry.training.config import FreezePolicy


def add_finetune(sub, common) -> None:
    p = sub.add_parser(
        "finetune",
        parents=[common],
        help="adapt a pretrained model to a new dataset",
        description="Plan and preprocess DATASET with its own fingerprint, build the model for its labels, "
        "load every compatible pretrained weight (report: RUN_DIR/init.json) and train with the pretraining "
        "engine (checkpoints, metrics, validation; continue with 'medfoundry pretrain --resume RUN_DIR'). "
        "Default: 50 epochs of 250 iterations, lr 1e-3, and the measured fine-tuning recipe: the "
        "pretrained stem, encoder and bottleneck are loaded, the decoder and head start anew (load "
        "everything with --set 'init_groups=[stem, encoder, bottleneck, decoder, heads]').",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        type=Path,
        metavar="CKPT_OR_RUN",
        help="a model file, a checkpoint, or a run folder (its best, else final, else latest "
        "checkpoint)",
    )
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="DATASET",
        help="a dataset folder (nnU-Net, MSD or plain layout with dataset.json), a one-dataset pool "
        "file, or an already preprocessed pool folder",
    )
    p.add_argument(
        "-o", "--out", required=True, type=Path, metavar="RUN_DIR", help="new run folder"
    )
    p.add_argument(
        "--freeze",
        choices=typing.get_args(FreezePolicy),
        help="parameters kept fixed (default none; heads always train)",
    )
    p.add_argument(
        "--head-warmup", type=int, metavar="STEPS", help="train only the head for STEPS steps first"
    )
    p.add_argument(
        "--patch", type=positive_int, nargs=3, metavar=("Z", "Y", "X"), help="default: planned"
    )
    p.add_argument(
        "--memory-gb", type=positive_float, default=8.0, help="planning budget (default 8)"
    )
    add_training_flags(p)
    p.add_argument(
        "-j", "--jobs", type=positive_int, default=2, metavar="N", help="preprocessing workers"
    )
    p.set_defaults(func=_finetune)


def _finetune(a) -> None:
    from medfoundry.training.config import TrainConfig, apply_overrides
    from medfoundry.transfer.finetune import finetune
    from medfoundry.transfer.recipe import FINETUNE_RECIPE

    cfg = config_from_flags(
        a,
        apply_overrides(TrainConfig(epochs=50), list(FINETUNE_RECIPE)),
        freeze=a.freeze,
        head_warmup_steps=a.head_warmup,
        patch_size=None if a.patch is None else json.dumps(a.patch),
    )
    out = finetune(a.source, a.data, a.out, cfg, a.memory_gb, a.jobs, progress=not a.quiet)
    c = out["init"]["counts"]
    print(
        f"initialised from {out['init']['source']}: loaded {c['loaded'] / 1e6:.2f}M, adapted "
        f"{c['adapted'] / 1e6:.2f}M, interpolated {c['interpolated'] / 1e6:.2f}M, skipped "
        f"{c['skipped'] / 1e6:.2f}M, new {c['new'] / 1e6:.2f}M parameters"
    )
    print(f"{run_summary(out)} -> {out['run_dir']}")


def add_predict(sub, common) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="segment images with a trained model",
        description="Sliding-window prediction with the checkpoint's own preprocessing; label maps in the "
        "input geometry and header. Cases already in OUT_DIR made by the same model and settings from "
        "the same inputs (recorded in OUT_DIR/.medfoundry/CASE.json) are kept, others predicted again; "
        "unreadable inputs and images with NaN/Inf voxels are reported and skipped (exit 1).",
    )
    p.add_argument(
        "-m",
        "--model",
        required=True,
        type=Path,
        metavar="MODEL",
        help="a model file (medfoundry models save), a checkpoint, or a run folder (its best, "
        "else final, else latest checkpoint)",
    )
    p.add_argument(
        "-i",
        "--input",
        required=True,
        type=Path,
        metavar="FILE_OR_DIR",
        help="an image, a folder of images ({case}_0000.nii.gz channel files are grouped), or a "
        "DICOM series folder (FOLDER::SERIES picks one of several: `medfoundry dicom ls` lists them)",
    )
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT_DIR")
    p.add_argument(
        "--step", type=float, default=0.5, help="tile step / patch, in (0, 1] (default 0.5)"
    )
    mirror = p.add_mutually_exclusive_group()
    mirror.add_argument(
        "--mirror",
        dest="mirror",
        action="store_true",
        default=None,
        help="mirroring test-time augmentation (default: on with CUDA, off on CPU)",
    )
    mirror.add_argument("--no-mirror", dest="mirror", action="store_false")
    p.add_argument("--classes", nargs="+", metavar="NAME_OR_ID", help="only these classes")
    p.add_argument(
        "--dataset", help="pool models: the dataset whose preprocessing and label ids to use"
    )
    p.add_argument("--save-probabilities", action="store_true", help="also write {case}.npz")
    add_output_type(p, "{case}_seg.dcm")
    p.add_argument(
        "--report",
        action="store_true",
        help="also the findings of each case (medfoundry report): {case}_findings.json and .html "
        "(with --output-type dicom-seg also {case}_findings_sr.dcm, a DICOM SR of them)",
    )
    p.add_argument(
        "--modality",
        metavar="NAME",
        help="with --report: CT reports HU (default: the DICOM series' modality, else none)",
    )
    p.add_argument(
        "--largest-component",
        nargs="*",
        metavar="NAME_OR_ID",
        help="keep only the largest connected component of these classes (no name: every class), "
        "as nnU-Net's post-processing; for organs that occur once, not for lesions",
    )
    p.add_argument("--no-amp", action="store_true", help="fp32 even where bf16 is native")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=_predict)


def _findings_writer(out_dir: Path, modality: str | None, sr: bool):
    """``after_case`` for ``predict --report``: the findings of each written case, and with a
    DICOM SEG output a DICOM SR of them referencing the SEG."""
    from medfoundry.io.dicom_sr import write_findings_sr
    from medfoundry.workflows.findings_report import write_findings_report

    def write(case, image, pred) -> None:
        names = dict(zip(pred.class_ids, pred.class_names, strict=True))
        kind = modality or image.meta.get("modality")
        findings = write_findings_report(pred.labels, names, out_dir, image, kind, case)
        if sr:
            seg = out_dir / f"{case}_seg.dcm"
            files = image.meta["dicom"]["files"]
            write_findings_sr(findings, seg, files, out_dir / f"{case}_findings_sr.dcm")

    return write


def _predict(a) -> int:
    from medfoundry.inference.predict_files import group_inputs, predict_paths
    from medfoundry.inference.predictor import PredictOptions, Predictor
    from medfoundry.runs.checkpoint import load_checkpoint, resolve_checkpoint

    options = PredictOptions(  # bad options, then bad inputs, fail before the model loads
        step_fraction=a.step,
        mirror=a.mirror,
        amp=not a.no_amp,
        dataset=a.dataset,
        classes=a.classes,
        save_probabilities=a.save_probabilities,
        largest_component=None if a.largest_component is None else a.largest_component or ["all"],
    )
    group_inputs(a.input)
    predictor = Predictor(load_checkpoint(resolve_checkpoint(a.model)), a.device, options)
    sr = a.output_type == "dicom-seg"
    after = _findings_writer(a.out, a.modality, sr) if a.report else None
    out = predict_paths(predictor, a.input, a.out, not a.quiet, a.output_type, after)
    print(
        f"predicted {len(out['written'])} case(s), kept {len(out['kept'])}, failed {len(out['failed'])} -> {out['out_dir']}"
    )
    return 1 if out["failed"] else 0


def add_evaluate(sub, common) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="Dice, IoU, surface Dice, HD95 and volumes of predictions against references",
        description="Pairs files by case name. Conventions for empty masks are written into the summary.",
    )
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR")
    p.add_argument("ref_dir", type=Path, metavar="REF_DIR")
    p.add_argument(
        "-o", "--out", type=Path, default=Path("summary.json"), help="default summary.json"
    )
    p.add_argument(
        "--labels", type=positive_int, nargs="+", help="label ids (default: all in the references)"
    )
    p.add_argument(
        "--tolerance-mm",
        type=non_negative_float,
        default=1.0,
        help="surface Dice tolerance (default 1)",
    )
    p.add_argument("-j", "--jobs", type=positive_int, default=2, metavar="N")
    p.set_defaults(func=_evaluate)


def _evaluate(a) -> None:
    from medfoundry.evaluation.evaluate import evaluate_folders

    if a.tolerance_mm < 0:
        raise MedfoundryError("--tolerance-mm must be >= 0")
    s = evaluate_folders(
        a.pred_dir, a.ref_dir, a.out, a.labels, a.tolerance_mm, a.jobs, progress=not a.quiet
    )
    print(f"{s['num_cases']} case(s); mean per label (tolerance {s['tolerance_mm']} mm):")
    print(f"{'label':>6} {'dice':>7} {'iou':>7} {'nsd':>7} {'hd95_mm':>8}")
    for lab, m in s["mean"].items():
        vals = [m[k] for k in ("dice", "iou", "surface_dice", "hd95_mm")]
        print(
            f"{lab:>6} " + " ".join(f"{v:>7.4f}" if v is not None else f"{'n/a':>7}" for v in vals)
        )
    print(f"-> {a.out}")


def add_benchmark(sub, common) -> None:
    p = sub.add_parser(
        "benchmark",
        parents=[common],
        help="benchmarks that are commands (transfer, fewshot, interactive, uncertainty)",
        description="Benchmarks run as commands; timing scripts against nnU-Net live in benchmarks/.",
    )
    bsub = p.add_subparsers(dest="benchmark_command", metavar="NAME", required=True)
    t = bsub.add_parser(
        "transfer",
        parents=[common],
        help="TSFM Table 2: fine-tuned vs from scratch for k epochs, and a long from-scratch reference",
        description="Per direction: pretrain on a pool without the target, fine-tune on the target for k "
        "epochs for each k, train from scratch for the same k, and from scratch for the full budget; "
        "writes table.md, table.csv and transfer.png per direction. Finished runs are reused, unfinished "
        "ones resumed.",
    )
    t.add_argument("--data", required=True, type=Path, metavar="DIR", help="like ../shared/data")
    t.add_argument("-o", "--out", required=True, type=Path, metavar="OUT_DIR")
    t.add_argument(
        "--preset",
        default="transfer_real",
        help="bundled name or YAML file (default transfer_real)",
    )
    t.add_argument("--direction", nargs="+", metavar="NAME", help="only these directions")
    t.add_argument(
        "--ks", type=positive_int, nargs="+", help="override the preset's k values (epochs)"
    )
    t.add_argument("--full-epochs", type=positive_int, help="override the full from-scratch budget")
    t.add_argument("-j", "--jobs", type=positive_int, default=2, metavar="N")
    t.set_defaults(func=_benchmark_transfer)
    f = bsub.add_parser(
        "fewshot",
        parents=[common],
        help="label efficiency: Dice against labelled target cases, from scratch and pretrained starts",
        description="Per target: train on n labelled cases (seeded subsets for small n) from each start "
        "(scratch, supervised pool, self-supervised, both) with the same steps; predict the fixed "
        "validation cases and score them with 'medfoundry evaluate' at the input grid. Writes runs.csv, "
        "table.md, table.csv, budget.json and fewshot.png per target. Finished runs are kept, "
        "unfinished ones resumed.",
    )
    f.add_argument("--data", required=True, type=Path, metavar="DIR", help="like ../shared/data")
    f.add_argument("-o", "--out", required=True, type=Path, metavar="OUT_DIR")
    f.add_argument("--preset", default="fewshot_real", help="bundled name or YAML file")
    f.add_argument("--target", nargs="+", metavar="NAME", help="only these targets")
    f.add_argument(
        "--ns",
        type=non_negative_int,
        nargs="+",
        metavar="N",
        help="override the preset's labelled case counts (0: all)",
    )
    f.add_argument("-j", "--jobs", type=positive_int, default=2, metavar="N")
    f.set_defaults(func=_benchmark_fewshot)
    add_benchmark_interactive(bsub, common)
    add_benchmark_uncertainty(bsub, common)


def _benchmark_fewshot(a) -> None:
    from medfoundry.workflows.fewshot_benchmark import load_fewshot_config, run_fewshot_benchmark

    cfg = load_fewshot_config(a.preset)
    cfg.ns = a.ns or cfg.ns
    run_fewshot_benchmark(a.data, a.out, cfg, a.target, a.jobs, progress=not a.quiet)
    for t in cfg.targets:
        table = a.out / t.name / "table.md"
        if table.is_file() and (not a.target or t.name in a.target):
            print(table.read_text())


def _benchmark_transfer(a) -> None:
    from medfoundry.workflows.transfer_benchmark import load_bench_config, run_transfer_benchmark

    cfg = load_bench_config(a.preset)
    if a.ks:
        cfg.ks = a.ks
    if a.full_epochs:
        cfg.full_epochs = a.full_epochs
    run_transfer_benchmark(a.data, a.out, cfg, a.direction, a.jobs, progress=not a.quiet)
    for d in cfg.directions:
        table = a.out / d.name / "table.md"
        if table.is_file():
            print(table.read_text())
