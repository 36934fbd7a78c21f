"""The findings report of one case: ``{case}_findings.json`` (:func:`compute_findings`) and a
self-contained ``{case}_findings.html`` (tables and overlay images embedded as base64 PNG), and with
``pdf`` a ``{case}_findings.pdf`` of the same overlays. Every file is written atomically.

Overlays are drawn in the radiological convention whatever the file's axis order: the volume is
turned to the closest LPS-aligned orientation first (axial: patient left on the image's right,
anterior at the top; coronal and sagittal: superior at the top), with the pixel aspect of the
spacing. Each present structure gets its axial, coronal and sagittal slice of largest
cross-section, with its contour on the image (on the label map when there is no image).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfoundry.evaluation.findings import compute_findings
from medfoundry.io import AXES, Volume
from medfoundry.utils.atomic import atomic_path
from medfoundry.workflows.report import COLOURS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_COMPONENT_ROWS = 50  # per structure in the HTML; the JSON lists all
_VIEWS = (("axial", 0), ("coronal", 1), ("sagittal", 2))  # name, canonical axis (S, P, L) cut


def write_findings_report(
    labels: Volume,
    class_names: dict[int, str],
    out_dir: Path,
    image: Volume | None = None,
    modality: str | None = None,
    case: str = "case",
    pdf: bool = False,
    min_component_voxels: int = 1,
) -> dict:
    """Measure ``labels`` (see :func:`compute_findings`) and write ``out_dir/{case}_findings.json``,
    ``{case}_findings.html`` and, with ``pdf``, ``{case}_findings.pdf``.

    Args:
        labels: ``(1, Z, Y, X)`` integer label map.
        class_names: id -> name (id 0, background, is skipped).
        out_dir: created if missing.
        image: optional ``(C, Z, Y, X)`` image on the label map's grid; channel 0 is drawn.
        modality: e.g. ``"CT"`` (intensities in HU, overlays in a soft-tissue window).
        case: the file-name prefix.
        pdf: also write the PDF (a summary page, then one page of overlays per structure).
        min_component_voxels: see :func:`compute_findings`.

    Returns:
        The findings dict (what the JSON file holds).
    """
    out_dir = Path(out_dir)
    findings = compute_findings(labels, class_names, image, modality, min_component_voxels)
    with contextlib.ExitStack() as stack:
        pages = None
        if pdf:  # PdfPages closes (LIFO) before the temporary file is renamed
            tmp = stack.enter_context(atomic_path(out_dir / f"{case}_findings.pdf"))
            pages = stack.enter_context(_pdf_pages(tmp, findings, case))
        pngs = {}
        for sid, fig in overlay_figures(labels, findings, image):  # one figure in memory at a time
            pngs[sid] = _png_base64(fig)
            if pages is not None:
                pages.savefig(fig)
    with atomic_path(out_dir / f"{case}_findings.json") as tmp:
        tmp.write_text(json.dumps(findings, indent=2) + "\n")
    with atomic_path(out_dir / f"{case}_findings.html") as tmp:
        tmp.write_text(findings_html(findings, case, pngs), encoding="utf-8")
    return findings


def findings_html(findings: dict, case: str, pngs: dict[int, str]) -> str:
    """The page: a summary table, then per structure its components and its overlay (``pngs``:
    structure id -> base64 PNG)."""
    e = html.escape
    unit = findings["intensity_unit"]
    geo = findings["geometry"]
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{e(case)}: findings</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style>",
        f"<h1>Findings: {e(case)}</h1>",
        f"<p>Modality: {e(str(findings['modality'] or 'not given'))}. Grid (Z, Y, X): "
        f"{' x '.join(str(v) for v in geo['shape_zyx'])} voxels of "
        f"{' x '.join(f'{v:.3g}' for v in geo['spacing_mm'])} mm. Components are "
        f"{findings['connectivity']}-connected, of at least {findings['min_component_voxels']} "
        "voxel(s); diameters are between voxel centres in world mm (axial: within one slice "
        f"along {e(findings['axial_axis'])}).</p>",
        *_unnamed_note(findings),
        "<h2>Structures</h2><table><tr><th>structure</th><th>id</th><th>volume (ml)</th>"
        "<th>components</th><th>longest diameter of the largest (mm)</th>"
        + (f"<th>mean &plusmn; sd ({e(unit)})</th><th>median [p5, p95]</th>" if unit else "")
        + "</tr>",
    ]
    for s in findings["structures"]:
        big = s["components"][0]["longest_diameter_mm"] if s["components"] else None
        row = (
            f"<tr><th>{e(s['name'])}</th><td>{s['id']}</td><td>{s['volume_ml']:.2f}</td>"
            f"<td>{s['n_components']}</td><td>{_num(big, 1)}</td>"
        )
        if unit:
            st = (s["intensity"] or [None])[0]
            row += (
                "<td>n/a</td><td>n/a</td>"
                if st is None
                else f"<td>{st['mean']:.1f} &plusmn; {st['std']:.1f}</td>"
                f"<td>{st['median']:.1f} [{st['p5']:.1f}, {st['p95']:.1f}]</td>"
            )
        parts.append(row + "</tr>")
    parts.append("</table>")
    for s in findings["structures"]:
        if s["voxels"]:
            parts += _structure_section(s, pngs.get(s["id"]))
    return "\n".join(parts) + "\n"


def overlay_figures(
    labels: Volume, findings: dict, image: Volume | None
) -> Iterator[tuple[int, Figure]]:
    """``(structure id, figure)`` per present structure: its axial, coronal and sagittal slices of
    largest cross-section with its contour. Each figure is closed when the next is asked for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order, flips = _orientation(labels.direction)
    lab = _oriented(labels.array[0], order, flips)
    img = None if image is None else _oriented(image.array[0], order, flips)
    spacing = labels.spacing_mm[order]
    ct = (findings["modality"] or "").upper() == "CT"
    for i, s in enumerate(s for s in findings["structures"] if s["voxels"]):
        cuts = _largest_cuts(labels.array[0], s, order, flips)
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.8))
        for ax, (name, axis), (k, where) in zip(axes, _VIEWS, cuts, strict=True):
            cut = tuple(k if a == axis else slice(None) for a in range(3))  # a view, no copy
            m = lab[cut] == s["id"]
            shown = None if img is None else img[cut]
            others = [a for a in range(3) if a != axis]
            aspect = spacing[others[0]] / spacing[others[1]]
            _draw_slice(ax, m, shown, aspect, axis == 0, ct, COLOURS[i % len(COLOURS)])
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(where, fontsize=8)
        title = s["name"].replace("$", r"\$")  # a name is text, never mathtext
        fig.suptitle(f"{title} ({s['volume_ml']:.1f} ml)", fontsize=10)
        fig.tight_layout()
        try:
            yield s["id"], fig
        finally:
            plt.close(fig)


def _draw_slice(ax, m, shown, aspect: float, axial: bool, ct: bool, colour) -> None:
    """Image slice ``shown`` (or the mask ``m`` itself) with the contour of ``m``; axial slices with
    row 0 (anterior) at the top, the others with row 0 (inferior) at the bottom."""
    if shown is None:
        shown, ct = m.astype(np.float32), False
    if ct:
        lo, hi = -160.0, 240.0  # soft-tissue window (W 400, L 40)
    else:
        lo, hi = (float(v) for v in np.percentile(shown, [1, 99]))
    origin = "upper" if axial else "lower"
    ax.imshow(shown, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), origin=origin)
    if m.any() and not m.all():
        # (column, row) data coordinates, as imshow's: the contour takes no origin of its own
        ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
    ax.set_aspect(aspect)
    ax.set_xticks([])
    ax.set_yticks([])


def _largest_cuts(lab: np.ndarray, s: dict, order, flips) -> list[tuple[int, str]]:
    """Per oriented axis (S, P, L): the oriented index of the slice holding the most of structure
    ``s`` and its name in the file's array axes (``"Z = 16"``); counted in the structure's box."""
    boxes = np.array([c["bbox_zyx_vox"] for c in s["components"]] or [[[0, n] for n in lab.shape]])
    start, stop = boxes[:, :, 0].min(axis=0), boxes[:, :, 1].max(axis=0)
    crop = lab[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] == s["id"]
    cuts = []
    for axis, a in enumerate(order):
        area = crop.sum(axis=tuple(b for b in range(3) if b != a))
        k = int(start[a] + np.argmax(area))  # index along array axis a of the file
        cuts.append((lab.shape[a] - 1 - k if flips[axis] else k, f"{AXES[1 + a]} = {k}"))
    return cuts


def _orientation(direction: np.ndarray) -> tuple[list[int], list[bool]]:
    """The array axes closest to world z, y, x (LPS) and whether each runs against it (a flip makes
    the index increase towards superior, posterior, left). Oblique grids: as stored."""
    world = np.argmax(np.abs(direction), axis=0)  # world axis (x=0, y=1, z=2) of each array axis
    if len(set(world.tolist())) != 3:
        return [0, 1, 2], [False, False, False]
    order = [int(np.flatnonzero(world == w)[0]) for w in (2, 1, 0)]
    return order, [bool(direction[w, a] < 0) for w, a in zip((2, 1, 0), order, strict=True)]


def _oriented(arr: np.ndarray, order: list[int], flips: list[bool]) -> np.ndarray:
    """A view (no copy) of ``arr`` ``(Z, Y, X)`` with axes in ``order`` and ``flips`` applied."""
    out = np.transpose(arr, order)
    axes = tuple(i for i, f in enumerate(flips) if f)
    return np.flip(out, axes) if axes else out


def _structure_section(s: dict, png: str | None) -> list[str]:
    e = html.escape
    comps = s["components"]
    parts = [
        f"<h2>{e(s['name'])} (id {s['id']})</h2>",
        f"<p>{s['volume_ml']:.2f} ml, {s['voxels']} voxels, {s['n_components']} component(s)"
        + (
            f" ({s['n_small_components']} smaller one(s) not listed)"
            if s["n_small_components"]
            else ""
        )
        + ".</p>",
        "<table><tr><th>#</th><th>volume (ml)</th><th>longest diameter (mm)</th>"
        "<th>longest axial diameter (mm)</th><th>on axial slice</th>"
        "<th>centroid LPS (mm)</th></tr>",
    ]
    for c in comps[:MAX_COMPONENT_ROWS]:
        lps = ", ".join(f"{v:.1f}" for v in c["centroid_lps_mm"])
        parts.append(
            f"<tr><td>{c['index']}</td><td>{c['volume_ml']:.3f}</td>"
            f"<td>{c['longest_diameter_mm']:.1f}</td>"
            f"<td>{c['longest_axial_diameter_mm']:.1f}</td><td>{c['axial_slice']}</td>"
            f"<td>({lps})</td></tr>"
        )
    parts.append("</table>")
    if len(comps) > MAX_COMPONENT_ROWS:
        parts.append(f"<p>... and {len(comps) - MAX_COMPONENT_ROWS} more (see the JSON file).</p>")
    if png:
        parts.append(f"<p><img src='data:image/png;base64,{png}' alt='{e(s['name'])} overlay'></p>")
    return parts


def _unnamed_note(findings: dict) -> list[str]:
    ids = findings["unnamed_label_ids"]
    if not ids:
        return []
    return [f"<p>Label ids without a name (not reported): {', '.join(str(i) for i in ids)}.</p>"]


def _num(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@contextlib.contextmanager
def _pdf_pages(path: Path, findings: dict, case: str) -> Iterator:
    """matplotlib ``PdfPages`` on ``path``, its first page a summary (one line per structure)."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    lines = [f"Findings: {case}   modality: {findings['modality'] or 'not given'}", ""]
    for s in findings["structures"]:
        big = s["components"][0]["longest_diameter_mm"] if s["components"] else None
        lines.append(
            f"{s['name']} (id {s['id']}): {s['volume_ml']:.2f} ml, {s['n_components']} "
            f"component(s), largest diameter {_num(big, 1)} mm"
        )
    with PdfPages(path) as pages:
        cover = plt.figure(figsize=(8.27, 11.69))
        try:
            text = "\n".join(lines[:80]).replace("$", r"\$")
            cover.text(0.05, 0.95, text, va="top", family="monospace", fontsize=8)
            pages.savefig(cover)
        finally:
            plt.close(cover)
        yield pages
