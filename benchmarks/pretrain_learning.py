"""Benchmark: does pooled pretraining learn each dataset as well as training on it alone?

Three runs of the same model, patch, batch, seed and step budget on the real data: the pool
(hippocampus + ACDC), hippocampus alone, ACDC alone. Each dataset's validation split is the same in
all runs (splits are drawn per dataset). Validation Dice per dataset and class is printed over time;
the last table compares pooled with single-dataset training at the end of the budget (goal: pooled not
worse by more than 0.02 on either dataset), then each dataset's share of the pooled batches and the
``--steps`` of a single-dataset run that sees as many of its batches (run it in another ``--work`` to
separate a cost of pooling from the smaller number of batches each dataset gets in the pool).

The budget is a number of steps (so a busy machine changes the wall time, not the comparison);
``--steps`` defaults to about 15 minutes per run on this 2-core CPU.
Usage: ``python benchmarks/pretrain_learning.py [--steps 1200] [--model tsfm_s] [--optim adamw --lr 1e-3]
[--target-spacing acdc=1,2,2] [--strides 1x1x1 2x2x2 2x2x2 1x2x2]``; on a GPU machine
``--device cuda --threads 4 --workers 4 --parallel`` trains the three runs at once (same steps).
The runs can be split over invocations (``--runs pooled acdc-only``, later ``--runs hippocampus-only``)
with the same ``--work`` and settings: each finished run leaves ``bench.json``, and the final table
takes the runs this invocation did not train from there when their settings match.
``--resume`` continues an invocation that was stopped (a time limit, a kill, a later session) in the same
``--work`` with the same settings: finished runs are kept, interrupted ones go on from their latest
checkpoint (``medfoundry pretrain --resume``, exact on CPU), and pools are not rebuilt.
``--seed N`` changes the training seed of every run but not the validation split (one ``--work`` per
seed, to tell validation noise from a real gap); ``--set KEY=VALUE`` sets any other training config
field in every run (e.g. ``deep_supervision=true``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MF, REPO, medfoundry, sets_args  # noqa: E402

from medfoundry import MedfoundryError  # noqa: E402
from medfoundry.data.sampler import PatchSampler  # noqa: E402
from medfoundry.models.sizes import get_size, total_stride  # noqa: E402
from medfoundry.planning.layout import stage_layout  # noqa: E402
from medfoundry.pool import load_pool  # noqa: E402
from medfoundry.runs.checkpoint import find_checkpoint  # noqa: E402
from medfoundry.training.config import TrainConfig, apply_overrides  # noqa: E402
from medfoundry.utils.jsonfile import read_json, write_json  # noqa: E402

POOLS = {
    "pooled": ["hippocampus", "acdc"],
    "hippocampus-only": ["hippocampus"],
    "acdc-only": ["acdc"],
}
DATASETS = {
    "hippocampus": "  - name: hippocampus\n    root: msd_task04_hippocampus\n    modality: MRI\n"
    "    label_map: {1: hippocampus_anterior, 2: hippocampus_posterior}\n",
    "acdc": "  - name: acdc\n    root: acdc\n    images: images/{case}.nii.gz\n    labels: labels/{case}.nii.gz\n"
    "    case_lists: [train.list, val.list]\n    modality: MRI\n    label_map: {1: right_ventricle, 2: myocardium, 3: left_ventricle}\n",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfoundry-bench-learning"))
    ap.add_argument("--model", default="tsfm_s")
    ap.add_argument("--patch", type=int, nargs=3, default=[16, 80, 80])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--validations", type=int, default=4, help="validation points over the budget")
    ap.add_argument("--val-cases", type=int, default=10, help="validation cases per dataset")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--optim", default="sgd", choices=["sgd", "adamw"])
    ap.add_argument(
        "--target-spacing",
        action="append",
        default=[],
        metavar="DATASET=Z,Y,X",
        help="plan this dataset at another spacing (mm), in every run that has it, e.g. acdc=1,2,2",
    )
    ap.add_argument(
        "--strides",
        nargs="+",
        type=_stride,
        metavar="ZxYxX",
        help="network stage strides for every run instead of the planned ones, e.g. 1x1x1 2x2x2 2x2x2 1x2x2",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed of every run; the validation split stays seed 0's, so runs of "
        "several seeds (each in its own --work) validate on the same cases",
    )
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other training config field, for every run (as pretrain --set), "
        "e.g. deep_supervision=true",
    )
    ap.add_argument("--runs", nargs="+", default=list(POOLS), choices=list(POOLS))
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the runs an earlier invocation with the same settings left in --work "
        "(finished runs are kept, interrupted ones resume from their latest checkpoint)",
    )
    ap.add_argument(
        "--device", default="cpu", help="cpu (the budget this benchmark is about) or cuda"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--workers", type=int, default=1, help="augmentation workers per run")
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="train the runs at the same time (one GPU, many cores)",
    )
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    if args.strides and (
        args.strides[0] != [1, 1, 1]
        or any(p % t for p, t in zip(args.patch, total_stride(args.strides), strict=True))
    ):
        ap.error(
            "--strides: the first stage (the stem) is 1x1x1 and the patch must be divisible by the "
            f"total stride {total_stride(args.strides)}"
        )
    args.data = args.data.resolve()  # pool.yaml paths resolve against the pool.yaml's folder
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    every = max(1, args.steps // args.validations)
    sets = [
        f"epochs={args.steps // every}",
        f"iters_per_epoch={every}",
        f"threads={args.threads}",
        f"data.num_workers={args.workers}",
        f"validation.max_cases={args.val_cases}",
        "validation.mode=full",  # Dice over time on whole volumes, as this benchmark reports
        "validation.final=false",
        f"optim.lr={args.lr}",
        f"optim.name={args.optim}",
        f"device={args.device}",
        f"seed={args.seed}",
        "data.split_seed=0",
        *args.sets,
    ]
    try:  # a bad --set or --seed fails here, before any run folder is replaced
        apply_overrides(TrainConfig(), sets)
    except MedfoundryError as err:
        ap.error(str(err))
    if args.seed < 0:
        ap.error(f"--seed: a seed is 0 or more, not {args.seed}")
    if args.work.exists() and not args.work.is_dir():
        ap.error(f"--work: {args.work} is a file, not a folder")
    print(
        f"model {args.model}, seed {args.seed}, patch {args.patch}, batch {args.batch_size}, {args.steps} steps, {args.optim} lr {args.lr} "
        f"(poly decay), validation every {every} steps on <= {args.val_cases} held-out cases per dataset, "
        f"device {args.device}, {args.threads} threads, {args.workers} data workers per run"
        + (", runs in parallel" if args.parallel else "")
        + "".join(f", {s} mm" for s in args.target_spacing)
        + "".join(f", {s}" for s in args.sets)
    )
    reuse = {run: args.resume and _prepared_before(run, args) for run in args.runs}
    for run in args.runs:  # (all checked above, before any folder is replaced)
        if not reuse[run]:
            _prepare(run, args, env)
    _same_network(args)
    for run in args.runs:
        medfoundry(
            ["preprocess", str(args.work / run / "pool"), "-j", str(max(2, args.workers))], env
        )
    results, started = {}, {}
    try:
        for run in args.runs:
            cmd = _train_command(run, args, sets)
            if cmd is None and (args.work / run / "bench.json").is_file():
                continue  # finished earlier: _earlier_runs below reports it with its own times
            # its own process group: a stop kills it with its data workers
            proc = subprocess.Popen(cmd, env=env, start_new_session=True) if cmd else None
            started[run] = (time.perf_counter(), proc)
            if not args.parallel:
                _finish(run, *started[run], args, results)
                del started[run]  # only once finished: the finally below stops a run still going
        while started:
            run = next(iter(started))
            _finish(run, *started[run], args, results)
            del started[run]
    finally:  # a failed run ends the benchmark: stop the ones still training
        for _, proc in started.values():
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    _earlier_runs(args, results)
    if {"pooled", "hippocampus-only", "acdc-only"} <= set(results):
        print("\nFinal validation mean Dice per dataset (same steps, batch, patch, model):")
        print("| dataset | pooled | alone | pooled - alone |")
        print("|---|---|---|---|")
        for ds, alone in (("hippocampus", "hippocampus-only"), ("acdc", "acdc-only")):
            p = results["pooled"]["val"][-1][f"val/{ds}/mean"]
            a = results[alone]["val"][-1][f"val/{ds}/mean"]
            print(f"| {ds} | {p:.3f} | {a:.3f} | {p - a:+.3f} |")
        _print_shares(args)


def _stop(*_) -> None:
    """SIGTERM (a time limit): exit through ``main``'s ``finally``, which stops the runs this
    invocation started (``--resume`` continues them); a second SIGTERM is ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(143)


def _print_shares(args: argparse.Namespace) -> None:
    """Each dataset's share of the pooled run's training batches (the sampler training draws
    datasets from, over the run's train split), and the single-dataset ``--steps`` that sees as many
    of its batches."""
    pool_dir = args.work / "pooled" / "pool"
    train = set(read_json(args.work / "pooled" / "run" / "splits.json")["train"])
    cases = [c for c in load_pool(pool_dir)["cases"] if c["id"] in train]
    shares = PatchSampler(str(pool_dir), cases).dataset_probabilities
    print("Share of the pooled training batches (1/sqrt rule), and the steps alone with as many:")
    for ds, share in shares.items():
        print(f"  {ds}: {share:.3f} -> --steps {round(args.steps * share)}")


def _prepared_before(run: str, args: argparse.Namespace) -> bool:
    """Whether ``--resume`` can reuse ``run``'s pool: planned by an earlier invocation with the same
    settings. Other settings are an error (resuming would mix two benchmarks)."""
    saved = args.work / run / "settings.json"
    if not saved.is_file() or not (args.work / run / "pool" / "plan.json").is_file():
        return False
    earlier, now = read_json(saved), _settings(args)
    if earlier != now:
        diff = sorted(k for k in {*earlier, *now} if earlier.get(k) != now.get(k))
        raise SystemExit(
            f"--resume: {args.work / run} was started with other settings ({', '.join(diff)}); "
            "run it without --resume to start again, or use another --work"
        )
    return True


def _train_command(run: str, args: argparse.Namespace, sets: list[str]) -> list[str] | None:
    """The ``medfoundry pretrain`` command for ``run``: none when ``--resume`` finds it finished,
    ``--resume RUN_DIR`` when it has a checkpoint, else a new run (a run stopped before its first
    checkpoint starts again)."""
    run_dir = args.work / run / "run"
    if args.resume and find_checkpoint(run_dir, "final"):
        print(f"{run}: finished by an earlier invocation, kept")
        return None
    if args.resume and find_checkpoint(run_dir, "latest"):
        print(f"{run}: resuming from its latest checkpoint")
        return [*MF, "pretrain", "--resume", str(run_dir)]
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [*MF, "pretrain", str(args.work / run / "pool"), "-o", str(run_dir)]
    return cmd + ["--model", args.model, *sets_args(sets)]


def _prepare(run: str, args: argparse.Namespace, env: dict) -> None:
    """A fresh pool folder for ``run``: build, plan at the benchmark's patch and batch."""
    work = args.work / run
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    spec = work / "pool.yaml"
    text = f"name: {run}\ndatasets:\n" + "".join(DATASETS[d] for d in POOLS[run])
    spec.write_text(text.replace("root: ", f"root: {args.data}/"))
    pool = str(work / "pool")
    jobs = str(max(2, args.workers))
    medfoundry(["pool", "build", str(spec), "-o", pool, "-j", jobs], env)
    plan = ["plan", pool, "--model", args.model, "--patch", *map(str, args.patch)]
    spacings = [s for s in args.target_spacing if s.split("=")[0] in POOLS[run]]
    plan += [arg for s in spacings for arg in ("--target-spacing", s)]
    medfoundry([*plan, "--batch-size", str(args.batch_size)], env)
    write_json(work / "settings.json", _settings(args))  # what --resume checks


def _same_network(args: argparse.Namespace) -> None:
    """Give every run one stage layout, so all runs train one network.

    With ``--strides`` each run's plan gets that layout (the features per stage are the model
    size's), so runs started by separate invocations still match. Otherwise the single-dataset runs
    get the pooled plan's layout: the layout follows the pool's spacing, and with
    ``--target-spacing`` the pooled and single-dataset pools can plan different strides. The plan's
    ``stages`` entry is edited as a user edits nnU-Net's plans file.
    """
    if not args.strides and "pooled" not in args.runs:
        return
    if not args.strides:
        pooled = json.loads((args.work / "pooled" / "pool" / "plan.json").read_text())
        layout = {k: pooled[k] for k in ("stages", "estimated_memory_gb")}
    for run in args.runs:
        path = args.work / run / "pool" / "plan.json"
        plan = json.loads(path.read_text())
        if args.strides:  # the memory estimate depends on the run's number of classes
            num_fg = len(plan["labels"]) - 1
            layout = stage_layout(
                get_size(args.model), args.patch, args.strides, args.batch_size, 1, num_fg
            )
        if plan["stages"] != layout["stages"]:
            plan.update(layout)
            write_json(path, plan)
            strides = " ".join("x".join(map(str, st["stride"])) for st in plan["stages"])
            print(f"{run}: network layout set to strides {strides}")


def _stride(text: str) -> list[int]:
    """``2x2x2`` -> ``[2, 2, 2]`` (one stage's stride along Z, Y, X: 1 or 2 each)."""
    parts = text.split("x")
    if len(parts) != 3 or any(p not in ("1", "2") for p in parts):
        raise argparse.ArgumentTypeError(
            f"a stride is ZxYxX with 1 or 2 each, e.g. 1x2x2, not '{text}'"
        )
    return [int(p) for p in parts]


def _settings(args: argparse.Namespace) -> dict:
    """The settings that make runs comparable (all but which runs, where, and in parallel or not)."""
    skip = ("runs", "work", "parallel", "resume")
    return {k: str(v) for k, v in sorted(vars(args).items()) if k not in skip}


def _earlier_runs(args: argparse.Namespace, results: dict) -> None:
    """Add runs finished by an earlier invocation in the same ``--work`` with the same settings."""
    for run in POOLS:
        saved = args.work / run / "bench.json"
        if run in results or not saved.is_file():
            continue
        earlier = json.loads(saved.read_text())
        if earlier.pop("settings") == _settings(args):
            results[run] = earlier
            print(f"{run}: figures of an earlier invocation with the same settings ({saved})")


def _finish(run: str, t: float, proc: subprocess.Popen | None, args, results: dict) -> None:
    """Wait for a run (none: finished earlier), then print its validation Dice over time. The wall
    time is this invocation's; the training-step time covers every step of the run."""
    if proc is not None and proc.wait():
        raise SystemExit(f"{run}: pretrain failed with exit code {proc.returncode}")
    wall = time.perf_counter() - t
    metrics = args.work / run / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    val = [r for r in rows if r["kind"] == "val"]
    train_s = sum(r["step_time_s"] for r in rows if r["kind"] == "train")
    results[run] = {"val": val, "wall_s": wall, "train_s": train_s}
    write_json(args.work / run / "bench.json", {"settings": _settings(args), **results[run]})
    print(f"\n{run}: {wall / 60:.1f} min wall ({train_s / 60:.1f} min training steps)")
    keys = sorted(k for k in val[-1] if k.startswith("val/") and k.count("/") == 2)
    print("| step | " + " | ".join(k[4:] for k in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for r in val:
        cells = " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys)
        print(f"| {r['step']} | {cells} |", flush=True)


if __name__ == "__main__":
    try:
        main()
    except MedfoundryError as err:  # e.g. an unreadable settings.json or bench.json in --work
        raise SystemExit(f"pretrain_learning: error: {err}") from None
