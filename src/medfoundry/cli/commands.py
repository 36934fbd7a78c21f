"""One small function per subcommand: parse -> call the API -> say where the outputs went."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medfoundry import api
from medfoundry.cli.arg_types import non_negative_int, positive_float, positive_int
from medfoundry.models.sizes import MODEL_SIZES
from medfoundry.pool.sampling import SAMPLING_RULES


def add_all(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Register every subcommand; ``common`` holds options (-q, --debug) each one accepts."""
    from medfoundry.cli import (
        classify_commands,
        dicom_commands,
        explain_commands,
        interactive_commands,
        report_commands,
        review_commands,
        serve_commands,
        train_commands,
        transfer_commands,
    )

    for add in (
        _add_synth,
        _add_pool,
        _add_plan,
        _add_preprocess,
        train_commands.add_models,
        train_commands.add_pretrain,
        transfer_commands.add_finetune,
        transfer_commands.add_predict,
        interactive_commands.add_segment,
        transfer_commands.add_evaluate,
        classify_commands.add_classify,
        explain_commands.add_explain,
        explain_commands.add_uncertainty,
        report_commands.add_report,
        review_commands.add_review,
        dicom_commands.add_dicom,
        serve_commands.add_serve,
        transfer_commands.add_benchmark,
        _add_run,
    ):
        add(sub, common)


def _jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        default=2,
        metavar="N",
        help="worker processes (default 2)",
    )


def _add_synth(sub, common) -> None:
    p = sub.add_parser(
        "synth",
        parents=[common],
        help="write the built-in synthetic phantom datasets (nnU-Net layout)",
        description="Write synthetic abdominal CT and MR phantom datasets in nnU-Net v2 layout, "
        "with partly overlapping label sets, and a pool.yaml over them. Deterministic by seed.",
    )
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--cases", type=int, default=16, help="cases per dataset (default 16)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    _jobs(p)
    p.set_defaults(func=_synth)


def _synth(a) -> None:
    if a.cases < 1:
        raise api.MedfoundryError(f"--cases must be at least 1, got {a.cases}")
    pool_file = api.write_synthetic_datasets(
        a.out, cases=a.cases, seed=a.seed, jobs=a.jobs, progress=not a.quiet
    )
    print(f"wrote synthetic datasets and {pool_file}")


def _add_pool(sub, common) -> None:
    p = sub.add_parser(
        "pool",
        parents=[common],
        help="build or show a dataset pool",
        description="Dataset pools: several datasets fused into one label space.",
    )
    psub = p.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    b = psub.add_parser(
        "build",
        parents=[common],
        help="validate datasets and write POOL_DIR/pool.json",
        description="Read a pool file, validate every case (files, shapes, geometry, label values, "
        "NaN/Inf) and write POOL_DIR/pool.json. Any problem fails the build unless --skip-invalid.",
    )
    b.add_argument("pool_file", type=Path, metavar="POOL.yaml")
    b.add_argument("-o", "--out", required=True, type=Path, metavar="POOL_DIR")
    b.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop invalid cases (recorded in pool.json 'skipped')",
    )
    b.add_argument(
        "--sampling", choices=sorted(SAMPLING_RULES), help="override the pool file's sampling rule"
    )
    _jobs(b)
    b.set_defaults(func=_pool_build)
    s = psub.add_parser("show", parents=[common], help="summarise POOL_DIR/pool.json")
    s.add_argument("pool_dir", type=Path, metavar="POOL_DIR")
    s.set_defaults(func=_pool_show)


def _pool_build(a) -> None:
    path = api.build_pool(
        a.pool_file,
        a.out,
        skip_invalid=a.skip_invalid,
        jobs=a.jobs,
        sampling=a.sampling,
        progress=not a.quiet,
    )
    pool = api.load_pool(a.out)
    if pool["skipped"]:
        print(f"skipped {len({s['case'] for s in pool['skipped']})} invalid case(s):")
        for s in pool["skipped"]:
            print(f"  {s['case']}: {s['file']}: {s['reason']}")
    _print_pool(pool)
    print(f"wrote {path}")


def _pool_show(a) -> None:
    _print_pool(api.load_pool(a.pool_dir))


def _print_pool(pool: dict) -> None:
    print(f"pool '{pool['name']}': {len(pool['cases'])} cases, sampling {pool['sampling']}")
    for name, d in pool["datasets"].items():
        share = sum(c["sampling_probability"] for c in pool["cases"] if c["dataset"] == name)
        mapped = ", ".join(f"{k}->{v}" for k, v in d["local_to_global"].items())
        print(
            f"  {name:<20} {d['num_cases']:>5} cases  {'/'.join(d['modality']):<6} share {share:.3f}  labels {mapped}"
        )
    print(
        "  global labels: "
        + ", ".join(f"{i}={n}" for n, i in sorted(pool["labels"].items(), key=lambda kv: kv[1]))
    )


def _add_plan(sub, common) -> None:
    p = sub.add_parser(
        "plan",
        parents=[common],
        help="fingerprint the pool and write POOL_DIR/plan.json",
        description="Compute the dataset fingerprint and write plan.json: target spacing and "
        "normalisation per dataset, patch size, batch size and stage layout for a model and memory budget.",
    )
    p.add_argument("pool_dir", type=Path, metavar="POOL_DIR")
    p.add_argument(
        "--model",
        default="tsfm_s",
        choices=sorted(MODEL_SIZES),
        help="model size to plan for (default tsfm_s)",
    )
    p.add_argument(
        "--memory-gb",
        type=positive_float,
        default=8.0,
        help="training memory budget in GB (default 8)",
    )
    p.add_argument(
        "--patch",
        type=positive_int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="fix the patch size (voxels)",
    )
    p.add_argument("--batch-size", type=positive_int, help="fix the batch size")
    p.add_argument(
        "--target-spacing",
        action="append",
        default=[],
        type=_dataset_spacing,
        metavar="DATASET=Z,Y,X",
        help="resample DATASET to this spacing in mm instead of the planned one (repeatable), "
        "e.g. acdc=1,2,2",
    )
    p.set_defaults(func=_plan)


def _dataset_spacing(text: str) -> tuple[str, list[float]]:
    name, _, values = text.partition("=")
    try:
        spacing = [float(v) for v in values.split(",")]
    except ValueError:
        spacing = []
    if not name or len(spacing) != 3:
        raise argparse.ArgumentTypeError(f"expected DATASET=Z,Y,X (mm), got '{text}'")
    return name, spacing


def _plan(a) -> None:
    path = api.make_plan(
        a.pool_dir,
        model=a.model,
        memory_gb=a.memory_gb,
        patch_size_vox=a.patch,
        batch_size=a.batch_size,
        target_spacing_mm=dict(a.target_spacing),
    )
    plan = json.loads(path.read_text())
    for name, d in plan["datasets"].items():
        norm = ",".join(n["scheme"] for n in d["normalization"])
        print(
            f"  {name:<20} spacing {d['target_spacing_mm']} mm  median shape {d['median_shape_vox']}  norm {norm}"
        )
    strides = " ".join("x".join(map(str, s["stride"])) for s in plan["stages"])
    print(
        f"  patch {plan['patch_size_vox']}  batch {plan['batch_size']}  stages {len(plan['stages'])} (strides {strides})"
        f"  ~{plan['estimated_memory_gb']} GB for {plan['model']}"
    )
    print(f"wrote {path}")


def _add_preprocess(sub, common) -> None:
    p = sub.add_parser(
        "preprocess",
        parents=[common],
        help="crop, normalise, resample and cache every case",
        description="Preprocess every case of a planned pool into POOL_DIR/preprocessed. "
        "Resumable: finished cases are kept; kill and rerun at will.",
    )
    p.add_argument("pool_dir", type=Path, metavar="POOL_DIR")
    _jobs(p)
    p.set_defaults(func=_preprocess)


def _preprocess(a) -> None:
    s = api.preprocess_pool(a.pool_dir, jobs=a.jobs, progress=not a.quiet)
    print(f"preprocessed {s['done']} case(s), kept {s['kept']} already done -> {s['cache']}")


def _add_run(sub, common) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="the main job: pool -> plan -> preprocess -> pretrain -> fine-tune -> predict -> evaluate -> report",
        description="Run the whole flow and write WORK_DIR/report/report.html. Without --data or --pool it "
        "generates the built-in synthetic datasets (pretrain on the CT-like one, transfer to the MR-like one); "
        "--data DIR uses the real-data preset in a folder laid out like ../shared/data (pretrain on ACDC, "
        "transfer to hippocampus). A second run reuses finished steps and resumes unfinished training.",
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        default=Path("work_dirs/main"),
        metavar="WORK_DIR",
        help="default work_dirs/main",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--data", type=Path, metavar="DIR", help="real data folder (like ../shared/data)"
    )
    src.add_argument("--pool", type=Path, metavar="POOL.yaml", help="your own pool file")
    p.add_argument("--holdout", help="dataset to transfer to (default: hippocampus / the last one)")
    p.add_argument(
        "--model",
        default="tsfm_test",
        choices=sorted(MODEL_SIZES),
        help="default tsfm_test: the main job fits 10 minutes on 2 cores without bf16",
    )
    p.add_argument("--memory-gb", type=positive_float, default=8.0)
    p.add_argument("--pretrain-steps", type=positive_int, default=400, help="default 400")
    p.add_argument("--finetune-epochs", type=positive_int, default=8, help="default 8")
    p.add_argument(
        "--finetune-iters", type=positive_int, default=25, help="iterations per epoch (default 25)"
    )
    p.add_argument(
        "--labelled",
        type=non_negative_int,
        default=4,
        metavar="N",
        help="labelled target cases the fine-tuned and from-scratch runs train on (default 4; 0: all)",
    )
    p.add_argument("--patch", type=positive_int, nargs=3, metavar=("Z", "Y", "X"))
    p.add_argument(
        "--synth-cases",
        type=positive_int,
        default=16,
        help="cases per synthetic dataset (default 16)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any training config field for every run, dotted (repeatable), as 'pretrain --set'",
    )
    _jobs(p)
    p.set_defaults(func=_run)


def _run(a) -> None:
    from medfoundry.training.config import apply_overrides, check_config
    from medfoundry.workflows.main_job import PipelineConfig

    cfg = PipelineConfig(
        memory_gb=a.memory_gb,
        pretrain_steps=a.pretrain_steps,
        finetune_epochs=a.finetune_epochs,
        finetune_iters=a.finetune_iters,
        target_labelled=a.labelled,
    )
    cfg.train.model, cfg.train.patch_size = a.model, a.patch
    check_config(apply_overrides(cfg.train, a.set))  # a bad value fails before any work
    s = api.run_pipeline(
        a.out,
        data_dir=a.data,
        pool_file=a.pool,
        jobs=a.jobs,
        synth_cases=a.synth_cases,
        holdout=a.holdout,
        cfg=cfg,
        progress=not a.quiet,
    )
    _print_pool(api.load_pool(s["pool_dir"]))
    print(f"  held out for transfer: {s['held-out target']}")
    print("  epoch  fine-tuned  from scratch  (validation mean Dice)")
    for r in s["transfer"]:
        print(f"  {r['epoch']:>5}  {_num(r['finetuned']):>10}  {_num(r['scratch']):>12}")
    print(f"  {'final weights, Dice':<26}{'fine-tuned':>12}{'from scratch':>14}")
    for r in s["comparison"]:
        print(f"  {r['class']:<26}{_num(r['finetune']):>12}{_num(r['scratch']):>14}")
    print(f"  pretrained start vs scratch: {s['pretrained start vs scratch']}")
    print(
        f"  largest component kept (chosen on validation): "
        f"{s['largest component kept (chosen on validation)']}; fine-tuned mean Dice with it "
        f"{_num(s['fine-tuned mean Dice with that postprocessing'])}"
    )
    print("  time: " + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in s["timings_s"].items()))
    print(f"done -> {s['report']}")


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
