"""The review queue's pictures and page: ``png/<case>.png`` per case and ``queue.html`` (rank order).

Each PNG shows the axial slice (a ``Z`` index) with the most disagreement: left, the image with the
consensus labels; right, the image with the disagreeing voxels highlighted (yellow).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from medfoundry.io import Volume
from medfoundry.utils.atomic import atomic_path
from medfoundry.workflows.report import COLOURS, save_figure

HIGHLIGHT = (1.0, 0.9, 0.0, 0.85)


def most_disagreeing_slice(disagreement_zyx: np.ndarray, labels_zyx: np.ndarray) -> int:
    """The Z index with the largest summed disagreement; with none anywhere, the one with the most
    labelled voxels (the middle slice of an empty map). Both arrays ``(Z, Y, X)``."""
    per_slice = disagreement_zyx.reshape(disagreement_zyx.shape[0], -1).sum(axis=1)
    if not per_slice.any():
        per_slice = (labels_zyx > 0).reshape(labels_zyx.shape[0], -1).sum(axis=1)
    if not per_slice.any():
        return labels_zyx.shape[0] // 2
    return int(np.argmax(per_slice))


def save_case_png(
    image: Volume,
    labels_zyx: np.ndarray,
    highlight_zyx: np.ndarray,
    disagreement_zyx: np.ndarray,
    out_png: Path,
    title: str,
) -> Path:
    """Write the case's picture: ``image`` ``(C, Z, Y, X)`` (channel 0 shown), its label map,
    the boolean voxels to highlight and the disagreement map (all ``(Z, Y, X)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = most_disagreeing_slice(disagreement_zyx, labels_zyx)
    img = image.array[0, z]
    lo, hi = np.percentile(img, [1, 99])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    lab, hit = labels_zyx[z], highlight_zyx[z]
    rgba = np.zeros((*lab.shape, 4))
    for v in np.unique(lab):
        if v:
            rgba[lab == v] = (*COLOURS[(int(v) - 1) % len(COLOURS)], 0.45)
    marks = np.zeros((*hit.shape, 4))
    marks[hit] = HIGHLIGHT
    panels = ((rgba, "consensus labels"), (marks, f"disagreeing voxels ({int(hit.sum())})"))
    for ax, (overlay, name) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.imshow(overlay)
        ax.set_title(f"{name}, slice z={z}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png)


def write_queue_html(out_dir: Path, rows: list[dict], rule: str, evaluation: dict | None) -> Path:
    """``out_dir/queue.html``: the rule, the evaluation (with references) and one table row per
    case in rank order with its scores, links to its files and its picture."""
    e = html.escape
    extra = [
        k
        for k in ("mean_entropy_fg", "mean_entropy", "tta_disagreement", "mean_pairwise_dice")
        if rows and k in rows[0]
    ]
    has_dice = any(r.get("dice") is not None for r in rows)
    head = ["rank", "case", "score", *extra, "disagreeing voxels", *(["Dice"] if has_dice else [])]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Review queue</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>",
        f"<h1>Review queue ({len(rows)} cases)</h1>",
        f"<p>Most doubtful first. {e(rule)}.</p>",
        *_evaluation_lines(evaluation),
        "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "<th>files</th><th></th></tr>",
    ]
    for r in rows:
        cells = [r["rank"], r["case"], r["score"], *(r[k] for k in extra), r["disagreeing_voxels"]]
        if has_dice:
            cells.append("n/a" if r.get("dice") is None else r["dice"])
        links = " ".join(
            f"<a href='{e(p)}'>{e(n)}</a>"
            for n, p in (("labels", r["prediction"]), ("disagreement", r["disagreement"]))
        )
        parts.append(
            "<tr>"
            + "".join(f"<td>{e(_cell(c))}</td>" for c in cells)
            + f"<td>{links}</td><td><img src='{e(r['png'])}' alt='{e(r['case'])}'></td></tr>"
        )
    parts.append("</table>")
    path = out_dir / "queue.html"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return path


def _evaluation_lines(ev: dict | None) -> list[str]:
    if ev is None:
        return []
    rho = "n/a" if ev["spearman_rho"] is None else f"{ev['spearman_rho']:.3f}"
    return [
        f"<p>Against the reference labels ({ev['cases']} cases): Spearman rho of the score with "
        f"Dice {rho} (negative: the higher the score, the lower the Dice); of the top "
        f"{ev['top_quarter']} cases, {ev['top_quarter_hits']} are among the {ev['top_quarter']} "
        f"with the lowest Dice (chance {ev['chance_hits']}).</p>"
    ]


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
