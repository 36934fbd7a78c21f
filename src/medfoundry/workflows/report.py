"""The main job's HTML report: transfer table, per-class Dice, and PNG overlays (matplotlib, Agg).

Everything is written into one folder: ``report.html`` plus ``overlay_<case>.png`` images.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from medfoundry.io import read_image, read_label
from medfoundry.utils.atomic import atomic_path

COLOURS = [(0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.2, 0.4, 1.0), (1.0, 0.8, 0.0), (0.9, 0.2, 0.9)]


def transfer_rows(finetune_val: list[dict], scratch_val: list[dict], dataset: str) -> list[dict]:
    """One row per validation during training (step, epoch, fine-tuned and from-scratch mean Dice; on
    the validation patches by default), then ``epoch: "final"``: the whole-volume validation of the
    final weights (the rows logged with ``final: true``)."""
    key = f"val/{dataset}/mean"
    periodic = lambda rows: [r for r in rows if not r.get("final")]  # noqa: E731
    final = lambda rows: ([r.get(key) for r in rows if r.get("final")] or [None])[-1]  # noqa: E731
    scratch = {r["step"]: r.get(key) for r in periodic(scratch_val)}
    rows = [
        {
            "epoch": r["epoch"],
            "step": r["step"],
            "finetuned": r.get(key),
            "scratch": scratch.get(r["step"]),
        }
        for r in periodic(finetune_val)
    ]
    if final(finetune_val) is not None or final(scratch_val) is not None:
        last = max((r["step"] for r in finetune_val), default=None)
        rows.append(
            {
                "epoch": "final",
                "step": last,
                "finetuned": final(finetune_val),
                "scratch": final(scratch_val),
            }
        )
    return rows


def save_overlay(image_path, ref_path, pred_path, out_png: Path, title: str) -> Path:
    """Image, reference and prediction on the axial slice with the most reference foreground."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = read_image(image_path).array[0]
    ref, pred = read_label(ref_path).array[0], read_label(pred_path).array[0]
    z = int(np.argmax((ref > 0).sum(axis=(1, 2))))
    lo, hi = np.percentile(img[z], [1, 99])
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, lab, name in zip(
        axes, (None, ref, pred), ("image", "reference", "prediction"), strict=True
    ):
        ax.imshow(img[z], cmap="gray", vmin=lo, vmax=hi)
        if lab is not None:
            rgba = np.zeros((*lab[z].shape, 4))
            for v in np.unique(lab[z]):
                if v:
                    rgba[lab[z] == v] = (*COLOURS[(int(v) - 1) % len(COLOURS)], 0.45)
            ax.imshow(rgba)
        ax.set_title(f"{name} (slice {z})", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png)


def write_report(out_dir: Path, title: str, sections: dict) -> Path:
    """``report.html`` from ``sections``: ``summary`` (key -> value), ``transfer`` (rows of
    :func:`transfer_rows`), ``dice`` (evaluate summary), ``class_names`` (id -> name), ``overlays``
    (PNG file names)."""
    e = html.escape
    summary = {k: v for k, v in sections["summary"].items() if k != "timings_s"}
    timings = sections["summary"].get("timings_s") or {}
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>",
        f"<h1>{e(title)}</h1>",
        "<h2>Run</h2><table>",
        *(f"<tr><th>{e(str(k))}</th><td>{e(_cell(v))}</td></tr>" for k, v in summary.items()),
        "</table>",
        *_timings_table(timings),
        *_comparison_table(sections.get("comparison") or []),
        *(
            [f"<p><img src='{e(sections['plot'])}' alt='transfer plot'></p>"]
            if "plot" in sections
            else []
        ),
        "<h2>Transfer during training: validation mean Dice on the held-out dataset</h2>",
        "<p>The same model, data and steps, initialised from the pretrained checkpoint or at random. "
        "Per epoch: Dice on a fixed set of validation patches (voxel counts pooled over the patches, "
        "nnU-Net's pseudo Dice); final: the final weights on the whole validation volumes.</p>",
        "<table><tr><th>epoch</th><th>step</th><th>fine-tuned</th><th>from scratch</th></tr>",
        *(
            f"<tr><td>{r['epoch']}</td><td>{r['step']}</td><td>{_f(r['finetuned'])}</td><td>{_f(r['scratch'])}</td></tr>"
            for r in sections["transfer"]
        ),
        "</table>",
        "<h2>Per-class metrics of the fine-tuned model (medfoundry evaluate, no postprocessing)</h2>",
        "<table><tr><th>class</th><th>Dice</th><th>IoU</th><th>surface Dice</th><th>HD95 mm</th></tr>",
    ]
    d = sections["dice"]
    for lab, m in d["mean"].items():
        name = sections["class_names"].get(int(lab), lab)
        vals = "".join(f"<td>{_f(m[k])}</td>" for k in ("dice", "iou", "surface_dice", "hd95_mm"))
        parts.append(f"<tr><th>{e(str(name))} ({lab})</th>{vals}</tr>")
    parts.append(
        f"</table><p>{d['num_cases']} case(s), surface tolerance {d['tolerance_mm']} mm.</p>"
    )
    parts.append("<h2>Overlays</h2>")
    parts += [f"<p><img src='{e(p)}' alt='{e(p)}'></p>" for p in sections["overlays"]]
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))
    return path


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _cell(v) -> str:
    return _f(v) if isinstance(v, float) else str(v)


def _comparison_table(rows: list[dict]) -> list[str]:
    """Few labelled cases: per class, the final weights of both starts scored at the input grid."""
    if not rows:
        return []
    e = html.escape
    head = (
        "fine-tuned",
        "from scratch",
        "fine-tuned, largest component (every class)",
        "fine-tuned, largest component where chosen",
    )
    return [
        "<h2>Few labelled cases: pretrained start vs scratch</h2>",
        "<p>Both runs train on the same labelled target cases for the same steps; their final weights "
        "predict the fixed validation cases, scored by <code>medfoundry evaluate</code> at the input "
        "grid (Dice). Keeping a class's largest connected component is chosen per class on these "
        "same validation cases (as nnU-Net chooses on its cross-validation), so the last column is "
        "optimistic; the comparison of starts uses the label maps as predicted.</p>",
        "<table><tr><th>class</th>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
        *(
            f"<tr><th>{e(str(r['class']))}</th>"
            + "".join(
                f"<td>{_f(r[k])}</td>"
                for k in ("finetune", "scratch", "finetune_lcc", "finetune_post")
            )
            + "</tr>"
            for r in rows
        ),
        "</table>",
    ]


def save_transfer_plot(curve: list[dict], rows: list[dict], out_png: Path, target: str) -> Path:
    """Left: validation mean Dice (patches) per step of both runs; right: final Dice per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    periodic = [r for r in curve if r["epoch"] != "final"]
    for key, label in (("finetuned", "pretrained start"), ("scratch", "from scratch")):
        pts = [(r["step"], r[key]) for r in periodic if r[key] is not None]
        if pts:
            a.plot(*zip(*pts, strict=True), marker="o", label=label)
    a.set(xlabel="step", ylabel="mean Dice (validation patches)", title=f"{target}: training")
    a.legend()
    classes = [r["class"] for r in rows]
    x = np.arange(len(classes))
    for i, (key, label) in enumerate(
        (("finetune", "pretrained start"), ("scratch", "from scratch"))
    ):
        b.bar(x + (i - 0.5) * 0.38, [r[key] or 0 for r in rows], 0.38, label=label)
    b.set_xticks(x, classes, rotation=20, fontsize=8)
    b.set(ylabel="Dice (validation, input grid)", title="final weights", ylim=(0, 1))
    b.legend(fontsize=8)
    return save_figure(fig, out_png)


def save_figure(fig, out_png: Path) -> Path:
    """Write ``fig`` as a PNG (complete or absent) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, dpi=80, format="png")
    finally:
        plt.close(fig)
    return out_png


def _timings_table(timings: dict[str, float]) -> list[str]:
    """The time of each step (``{"pretrain_s": 288.1, ...}``) and the total, as table rows."""
    if not timings:
        return []
    rows = [(k.removesuffix("_s").replace("_", " "), v) for k, v in timings.items()]
    rows.append(("total", sum(timings.values())))
    return [
        "<h2>Time</h2><table><tr><th>step</th><th>seconds</th><th>minutes</th></tr>",
        *(
            f"<tr><th>{html.escape(n)}</th><td>{v:.1f}</td><td>{v / 60:.1f}</td></tr>"
            for n, v in rows
        ),
        "</table>",
    ]
