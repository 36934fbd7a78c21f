"""``segment`` (automatic or prompted, one image) and ``benchmark interactive``."""

from __future__ import annotations

from pathlib import Path

from medfoundry import MedfoundryError
from medfoundry.cli.arg_types import add_output_type, positive_int


def add_segment(sub, common) -> None:
    p = sub.add_parser(
        "segment",
        parents=[common],
        help="segment one image: automatically, by class name, or from clicks and boxes",
        description="With --point/--box (one object) or --prompts FILE (many): a promptable model "
        "(finetune --task promptable) segments the object the prompts point at, whether or not it "
        "is one of its classes; the box first, then each click in order, as a user would. Without "
        "prompts: its automatic mode (--class: only these classes, by name or synonym). Voxel "
        "indices are (Z, Y, X) of the input as read; the output has the input's geometry.",
    )
    p.add_argument("-m", "--model", required=True, type=Path, metavar="MODEL")
    p.add_argument("-i", "--input", required=True, type=Path, metavar="SCAN")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="e.g. mask.nii.gz")
    p.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="Z,Y,X[:neg]",
        help="a click (repeatable; ':neg' marks background)",
    )
    p.add_argument("--box", metavar="Z0,Y0,X0,Z1,Y1,X1", help="a 3D box, inclusive")
    p.add_argument(
        "--prompts",
        type=Path,
        metavar="JSON",
        help='many objects: {"objects": [{"name", "label", "points": [[z,y,x(,false)]], "box"}]}',
    )
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME",
        help='automatic mode for this class only (free text: "left kidney"; repeatable)',
    )
    p.add_argument(
        "--dataset", help="pool models: the dataset whose preprocessing to use (default: the first)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    add_output_type(p, "OUT")
    p.set_defaults(func=_segment)


def _segment(a) -> None:
    from medfoundry.inference.segment import (
        ObjectPrompts,
        parse_box,
        parse_point,
        read_prompts,
        segment_image,
    )

    prompted = bool(a.point or a.box)
    if sum([prompted, a.prompts is not None, bool(a.classes)]) > 1:
        raise MedfoundryError("give clicks/box, --prompts or --class, not several")
    objects = None
    if prompted:
        box = parse_box(a.box) if a.box else None
        objects = [ObjectPrompts([parse_point(p) for p in a.point], box)]
    elif a.prompts is not None:
        objects = read_prompts(a.prompts)
    done = segment_image(
        a.model, a.input, a.out, objects, a.classes, a.device, a.dataset, a.output_type
    )
    labels = ", ".join(f"{n}={i}" for n, i in done["labels"].items())
    extra = ""
    if "timings" in done:
        t = done["timings"]
        extra = f" (set volume {t['set_volume_s']:.2f} s, last interaction {t['last_interaction_s']:.2f} s)"
    print(f"{done['mode']}: {labels} -> {a.out}{extra}")


def add_benchmark_interactive(bsub, common) -> None:
    b = bsub.add_parser(
        "interactive",
        parents=[common],
        help="promptable segmentation: Dice after 1-10 simulated clicks and a box, NoC@85/90, "
        "latency, against the automatic mode and region growing",
        description="On held-out cases (images with same-named references): a simulated user "
        "clicks at the centre of the largest error each time; Dice after 1, 2, 3, 5 and 10 clicks "
        "and from the structure's box, NoC@85/90 and latency, per structure; in the same run the "
        "model's automatic mode (structures among its classes) and SimpleITK region growing from "
        "its own clicks. Writes cases.csv, table.md, table.csv and clicks.png; finished cases "
        "(OUT_DIR/cases/CASE.json) are kept.",
    )
    b.add_argument("-m", "--model", required=True, type=Path, metavar="MODEL")
    b.add_argument("--images", required=True, type=Path, metavar="DIR")
    b.add_argument("--labels", required=True, type=Path, metavar="DIR")
    b.add_argument(
        "--structure",
        action="append",
        required=True,
        metavar="NAME=ID[,ID]",
        help="a structure: reference label ids; 'seen' when NAME is a class of the model",
    )
    b.add_argument("-o", "--out", required=True, type=Path, metavar="OUT_DIR")
    b.add_argument("--clicks", type=positive_int, default=10)
    b.add_argument("--max-cases", type=positive_int, metavar="N")
    b.add_argument("--device", default="cpu")
    b.add_argument(
        "--dataset", help="pool models: the dataset whose preprocessing to use (default: the first)"
    )
    b.add_argument(
        "--no-auto-start",
        action="store_true",
        help="the first click starts from nothing, not from the automatic mode's structure under it",
    )
    b.set_defaults(func=_benchmark_interactive)


def _benchmark_interactive(a) -> None:
    from medfoundry.workflows.interactive_benchmark import (
        parse_structure,
        run_interactive_benchmark,
    )

    structures = dict(parse_structure(s) for s in a.structure)
    run_interactive_benchmark(
        a.model,
        a.images,
        a.labels,
        structures,
        a.out,
        a.clicks,
        a.max_cases,
        a.device,
        progress=not a.quiet,
        dataset=a.dataset,
        auto_start=not a.no_auto_start,
    )
    print((a.out / "table.md").read_text())
