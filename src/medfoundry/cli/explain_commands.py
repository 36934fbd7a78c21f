"""``explain`` (saliency maps), ``uncertainty`` (segmentation with an entropy map and per-case
scores) and ``benchmark uncertainty``."""

from __future__ import annotations

from pathlib import Path

from medfoundry.cli.arg_types import positive_int
from medfoundry.data.classification import SPLITS as SPLIT_CHOICES


def add_explain(sub, common) -> None:
    p = sub.add_parser(
        "explain",
        parents=[common],
        help="saliency maps (Grad-CAM, occlusion, integrated gradients) as NIfTI + PNG overlays",
        description="Explain a classifier's call (images of --data's --split, or one image -i) or "
        "one --class of a segmentation model on -i IMAGE. Writes OUT/<case>_<method>.nii.gz (the "
        "input's geometry), OUT/<case>_<method>.png and OUT/explain.json. --sanity adds the "
        "model-randomisation test (rank similarity of the map to the map of a randomly "
        "re-initialised copy: low is good) and, on a binary shape image (AdrenalMNIST3D), the share "
        "of the map on the shape against the share of the volume it covers.",
    )
    p.add_argument("-m", "--model", required=True, type=Path, metavar="RUN_OR_MODEL")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT")
    p.add_argument("-i", "--input", type=Path, metavar="IMAGE")
    p.add_argument("--data", type=Path, metavar="FILE_OR_DIR")
    p.add_argument("--split", choices=SPLIT_CHOICES, default="val")
    p.add_argument(
        "--cases", type=int, nargs="+", metavar="I", help="indices in the split (default 0 1 2 3)"
    )
    p.add_argument("--class", dest="class_name", help="segmentation models: the class to explain")
    p.add_argument(
        "--method",
        choices=("gradcam", "occlusion", "ig"),
        default="gradcam",
        help="gradcam (default), occlusion, ig (integrated gradients)",
    )
    p.add_argument(
        "--layer",
        help="Grad-CAM layer, a module name such as encoder.2 (default: last encoder stage)",
    )
    p.add_argument("--sanity", action="store_true", help="run the sanity checks too")
    p.set_defaults(func=_explain)


def _explain(a) -> None:
    from medfoundry.workflows.explain import explain

    r = explain(
        a.model, a.out, a.method, a.input, a.data, a.split, a.cases, a.class_name, a.layer, a.sanity
    )
    line = f"explained {len(r['cases'])} image(s) with {a.method}"
    if "mean_randomized_rank_similarity" in r:
        line += (
            f"; rank similarity to a randomised model {r['mean_randomized_rank_similarity']:.3f}"
        )
    if "mean_on_shape" in r:
        s = r["mean_on_shape"]
        line += f"; share on the shape {s['inside']:.3f} (volume share {s['chance']:.3f})"
    print(f"{line} -> {a.out}")


def add_uncertainty(sub, common) -> None:
    p = sub.add_parser(
        "uncertainty",
        parents=[common],
        help="segment with test-time mirroring: label map, entropy map and per-case scores",
        description="For each image of -i (a file or folder): OUT/<case>.nii.gz (labels of the "
        "averaged mirrored passes), OUT/<case>_entropy.nii.gz (predictive entropy, nats, the "
        "input's geometry) and a row of OUT/scores.csv (mean_entropy_fg, mean_entropy, "
        "tta_disagreement). Sort scores.csv to review the least certain cases first.",
    )
    p.add_argument("-m", "--model", required=True, type=Path, metavar="MODEL")
    p.add_argument("-i", "--input", required=True, type=Path, metavar="IMAGE_OR_DIR")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="OUT")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", help="a pool model's dataset whose preprocessing to use")
    p.set_defaults(func=_uncertainty)


def add_benchmark_uncertainty(bsub, common) -> None:
    b = bsub.add_parser(
        "uncertainty",
        parents=[common],
        help="does the per-case uncertainty score rank the lowest-Dice cases first?",
        description="Predict every held-out case with test-time mirroring, score it against its "
        "reference, and report each uncertainty score's Spearman correlation with Dice and its "
        "hits among the worst quarter: cases.csv, table.md, table.csv, uncertainty.png, "
        "maps/<case>_entropy.nii.gz. Finished cases are kept (rerun to resume).",
    )
    b.add_argument("-m", "--model", required=True, type=Path, metavar="MODEL")
    b.add_argument("--images", required=True, type=Path, metavar="DIR")
    b.add_argument("--labels", required=True, type=Path, metavar="DIR")
    b.add_argument("-o", "--out", required=True, type=Path, metavar="OUT")
    b.add_argument("--max-cases", type=positive_int, metavar="N")
    b.add_argument("--device", default="cpu")
    b.add_argument("--dataset", help="a pool model's dataset whose preprocessing to use")
    b.set_defaults(func=_benchmark_uncertainty)


def _uncertainty(a) -> None:
    from medfoundry.workflows.uncertainty import predict_uncertainty_files

    rows = predict_uncertainty_files(
        a.model, a.input, a.out, a.device, a.dataset, progress=not a.quiet
    )
    print(f"{len(rows)} image(s): labels, entropy maps and scores.csv -> {a.out}")


def _benchmark_uncertainty(a) -> None:
    from medfoundry.workflows.uncertainty import run_uncertainty_benchmark

    r = run_uncertainty_benchmark(
        a.model, a.images, a.labels, a.out, a.max_cases, a.device, a.dataset, not a.quiet
    )
    for row in r["table"]:
        print(
            f"{row['score']}: Spearman rho with Dice {row['spearman']:.3f} "
            f"(p {row['p_value']:.2g}), worst-quarter hits {row['worst_quarter_hits']}"
        )
    print(f"{r['cases']} cases -> {a.out / 'table.md'}")
