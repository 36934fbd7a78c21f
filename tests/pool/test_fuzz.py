"""Fuzz the readers and ``pool build`` with damaged copies of real hippocampus cases.

From three real cases a seeded RNG makes about forty damaged files: random truncations, random
bytes overwritten, garbage with a volume suffix, odd voxel types, NaN/Inf, and extreme shapes. Every
read must give a volume or a :class:`VolumeReadError` (nothing else, no hang, nothing printed), and
``medfoundry pool build`` over a dataset holding damaged files must report one line per problem
naming it, exit with 2 and write nothing, or list it in ``skipped`` under ``--skip-invalid``.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
import re
import resource
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfoundry.cli.main import main

SEED = 20240611
PER_CALL_S = 10.0  # a read that takes longer is a hang (they take milliseconds)
WORKER_MEMORY = 6 << 30  # a header declaring a huge volume must fail, not fill the machine
READERS = ("read_volume", "read_image", "read_label")


@dataclass
class Damaged:
    """One damaged file: what was done to it, and which file of a case it stands for."""

    kind: str
    path: Path
    role: str  # "image" or "label"
    source: tuple[Path, Path]  # the real (image, label) it was made from

    def __str__(self) -> str:
        return f"seed {SEED}, {self.kind} ({self.role}) {self.path.name}"


def _cut(rng, data: bytes) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def _overwrite(rng, data: bytes, header_only: bool) -> bytes:
    out = bytearray(data)
    n = int(rng.integers(1, 64))
    end = min(len(out), 400) if header_only else len(out)
    pos = int(rng.integers(0, end - n))
    out[pos : pos + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return bytes(out)


def _garbage(rng, suffix: str) -> bytes:
    noise = rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    if suffix == ".mha":  # a plausible header over noise
        return (
            b"ObjectType = Image\nNDims = 3\nDimSize = 35 51 35\nElementType = MET_UCHAR\n" + noise
        )
    return gzip.compress(noise) if rng.random() < 0.5 and suffix == ".nii.gz" else noise


def _array(kind: str, img: np.ndarray, lab: np.ndarray, rng) -> np.ndarray:
    """The voxel data of a damaged NIfTI made from a real case's image and label ``(X, Y, Z)``."""
    fg = lab > 0
    if kind == "complex image":
        return img.astype(np.complex64) * (1 + 1j)
    if kind == "rgb image":
        return np.zeros(img.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    if kind == "fractional label":
        out = lab.astype(np.float32)
        out[np.unravel_index(rng.integers(0, out.size, 5), out.shape)] += 0.5
        return out
    if kind == "float64 label":
        return lab.astype(np.float64)
    if kind == "negative label":
        out = lab.astype(np.int16)
        out[0, 0, 0] = -1
        return out
    if kind in ("nan image", "inf image"):
        return np.where(fg, np.nan if kind == "nan image" else np.inf, img).astype(np.float32)
    if kind in ("nan label", "inf label"):
        return np.where(fg, np.nan if kind == "nan label" else -np.inf, 0).astype(np.float32)
    if kind == "empty-axis image":
        return img[:0]
    if kind == "1x1x1 image":
        return img[:1, :1, :1]
    if kind == "4D image":
        return np.stack([img, img], axis=-1)
    if kind == "5D label":
        return lab[..., None, None].repeat(2, axis=-1)
    if kind == "2D label":
        return lab[:, :, 0]
    raise AssertionError(kind)


ARRAY_KINDS = [
    "complex image",
    "rgb image",
    "fractional label",
    "float64 label",
    "negative label",
    "nan image",
    "inf image",
    "nan label",
    "inf label",
    "empty-axis image",
    "1x1x1 image",
    "4D image",
    "5D label",
    "2D label",
]


def make_damaged_files(cases: list[tuple[Path, Path]], out: Path, seed: int) -> list[Damaged]:
    """About forty damaged files in ``out`` from real ``(image, label)`` NIfTI pairs, seeded."""
    rng = np.random.default_rng(seed)
    made: list[Damaged] = []

    def new(kind: str, role: str, suffix: str) -> tuple[Damaged, bytes]:
        """A damaged file's record (on a random source case) and the source file's bytes."""
        source = cases[int(rng.integers(len(cases)))]
        made.append(Damaged(kind, out / f"d{len(made):02d}{suffix}", role, source))
        return made[-1], (source[0] if role == "image" else source[1]).read_bytes()

    for i in range(8):
        d, data = new("truncated", ("image", "label")[i % 2], ".nii.gz" if i < 6 else ".nii")
        d.path.write_bytes(_cut(rng, data if i < 6 else gzip.decompress(data)))
    for i in range(6):
        raw = i >= 3  # an uncompressed copy, damaged in its header
        kind = "header bytes overwritten" if raw else "bytes overwritten"
        d, data = new(kind, ("image", "label")[i % 2], ".nii" if raw else ".nii.gz")
        damaged = _overwrite(rng, gzip.decompress(data) if raw else data, header_only=raw)
        d.path.write_bytes(damaged)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".nii.gz", ".mha"):
        d, _ = new("garbage", "image", suffix)
        d.path.write_bytes(_garbage(rng, suffix))
    for kind in ARRAY_KINDS:
        _write_array(new(kind, kind.split()[-1], ".nii.gz")[0], kind, rng)
    for i, kind in enumerate(["truncated", "header bytes overwritten", "4D", "2D", "vector label"]):
        _write_itk(new(f"itk {kind}", "label", (".mha", ".nrrd")[i % 2])[0], kind, rng)
    return made


def _write_array(d: Damaged, kind: str, rng) -> None:
    img = nib.load(d.source[0])
    image, label = np.asanyarray(img.dataobj), np.asanyarray(nib.load(d.source[1]).dataobj)
    nib.save(nib.Nifti1Image(_array(kind, image, label, rng), img.affine), d.path)


def _write_itk(d: Damaged, kind: str, rng) -> None:
    """NRRD / MHA: truncated, header scrambled, 4D, 2D, a two-component label map."""
    arr = np.asanyarray(nib.load(d.source[1]).dataobj).T  # (Z, Y, X)
    if kind in ("truncated", "header bytes overwritten"):
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(d.path), useCompression=False)
        data = d.path.read_bytes()
        d.path.write_bytes(_cut(rng, data) if kind == "truncated" else _overwrite(rng, data, True))
        return
    arr = {"4D": arr[None].repeat(2, 0), "2D": arr[0], "vector label": arr[..., None].repeat(2, -1)}
    image = sitk.GetImageFromArray(arr[kind], isVector=kind == "vector label")
    sitk.WriteImage(image, str(d.path))


def _reader_worker(conn) -> None:
    """Run reads sent over ``conn``; answer what came back and what was printed meanwhile."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    from medfoundry import io

    conn.send("ready")
    while (task := conn.recv()) is not None:
        name, path = task
        with tempfile.TemporaryFile() as sink:
            saved = [os.dup(1), os.dup(2)]
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                vol = getattr(io, name)(path)
                answer = ("Volume", f"shape {vol.array.shape} {vol.array.dtype}")
            except io.VolumeReadError as err:
                answer = ("VolumeReadError", str(err))
            except BaseException as err:  # noqa: BLE001 - what the test is looking for
                answer = (type(err).__name__, traceback.format_exc())
            finally:
                for fd, target in zip(saved, (1, 2), strict=True):
                    os.dup2(fd, target)
                    os.close(fd)
            sink.seek(0)
            conn.send((*answer, sink.read().decode(errors="replace")))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, hippo_dir) -> list[Damaged]:
    names = sorted(p.name for p in (hippo_dir / "labelsTr").glob("hippocampus_*.nii.gz"))[:3]
    cases = [(hippo_dir / "imagesTr" / n, hippo_dir / "labelsTr" / n) for n in names]
    return make_damaged_files(cases, tmp_path_factory.mktemp("damaged"), SEED)


@pytest.fixture(scope="module")
def read_results(damaged) -> dict[tuple[str, str], tuple[str, str, str]]:
    """``(file name, reader) -> (outcome, detail, printed)`` for every damaged file and reader, each
    read in a separate process with a time limit."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    worker = ctx.Process(target=_reader_worker, args=(child,), daemon=True)
    worker.start()
    results = {}
    try:
        assert parent.poll(60) and parent.recv() == "ready", "reader worker did not start"
        for d in damaged:
            for name in READERS:
                parent.send((name, str(d.path)))
                if not parent.poll(PER_CALL_S):
                    pytest.fail(f"{d}: {name} did not return within {PER_CALL_S} s (a hang)")
                try:
                    results[(d.path.name, name)] = parent.recv()
                except EOFError:
                    pytest.fail(f"{d}: {name} killed the process (exit {worker.exitcode})")
        parent.send(None)
    finally:
        worker.join(5)
        if worker.is_alive():
            worker.kill()
    return results


def test_about_forty_damaged_files_of_every_kind(damaged):
    assert 35 <= len(damaged) <= 45
    suffixes = {"".join(d.path.suffixes) for d in damaged}
    assert suffixes == {".nii.gz", ".nii", ".nrrd", ".mha"}


def test_readers_give_a_volume_or_a_volume_read_error_and_print_nothing(damaged, read_results):
    for d in damaged:
        for name in READERS:
            outcome, detail, printed = read_results[(d.path.name, name)]
            assert outcome in ("Volume", "VolumeReadError"), f"{d}: {name} raised {detail}"
            if outcome == "VolumeReadError":
                assert detail.startswith(f"{d.path}: ") and "\n" not in detail, f"{d}: {detail}"
            assert printed == "", f"{d}: {name} printed {printed!r}"


MUST_FAIL = {  # damage the readers must refuse (the rest may read, and is left to pool validation)
    "garbage": "read_image",
    "complex image": "read_image",
    "rgb image": "read_image",
    "empty-axis image": "read_image",
    "fractional label": "read_label",
    "nan label": "read_label",
    "inf label": "read_label",
    "5D label": "read_label",
    "2D label": "read_label",
    "4D image": "read_label",
    "itk 4D": "read_label",
    "itk 2D": "read_label",
    "itk vector label": "read_label",
}


def test_damage_that_cannot_be_read_is_refused(damaged, read_results):
    checked = [d for d in damaged if d.kind in MUST_FAIL]
    assert len(checked) >= 15
    for d in checked:
        outcome, detail, _ = read_results[(d.path.name, MUST_FAIL[d.kind])]
        assert outcome == "VolumeReadError", f"{d}: {MUST_FAIL[d.kind]} gave {detail}"


def _dataset_with(damaged: list[Damaged], root: Path) -> dict[str, Damaged]:
    """An MSD-layout dataset: one case per damaged file (its source case with that file replaced)
    and two intact cases; returns case id -> the damage, at its place in the dataset."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    shutil.copy(damaged[0].source[0].parents[1] / "dataset.json", root / "dataset.json")
    intact = [Damaged("intact", Path(), "image", d.source) for d in damaged[:2]]
    placed = {}
    for i, d in enumerate(damaged + intact):
        name = f"case_{i:02d}.nii.gz" if d.kind != "intact" else f"intact_{i:02d}.nii.gz"
        image, label = root / "imagesTr" / name, root / "labelsTr" / name
        shutil.copy(d.source[0], image)
        shutil.copy(d.source[1], label)
        if d.kind != "intact":
            target = image if d.role == "image" else label
            shutil.copy(d.path, target)
            placed[f"hippo/{name[: -len('.nii.gz')]}"] = Damaged(d.kind, target, d.role, d.source)
    return placed


PROBLEM_LINE = re.compile(r"^(?P<case>hippo/[^:]+): (?P<file>/[^:]+): (?P<reason>.+)$")
NAMED_WHEN_READ = {"nan image", "inf image", "4D image", "negative label"}
"""Damage that reads but that validation must blame on the damaged file itself."""


def _pool_build(spec: Path, out: Path, capfd, *flags: str) -> tuple[int, str]:
    capfd.readouterr()
    code = main(["-q", "pool", "build", str(spec), "-o", str(out), "-j", "2", *flags])
    return code, capfd.readouterr().err


def test_pool_build_reports_each_damaged_file_in_one_line_and_writes_nothing(
    damaged, read_results, tmp_path, capfd
):
    chosen = [d for d in damaged if d.path.name.endswith(".nii.gz")]
    placed = _dataset_with(chosen, tmp_path / "hippo")
    named = {  # the damaged file itself must be named: it cannot be read, or validation must see it
        case: d
        for (case, d), src in zip(placed.items(), chosen, strict=True)
        if read_results[(src.path.name, f"read_{d.role}")][0] == "VolumeReadError"
        or d.kind in NAMED_WHEN_READ
    }
    spec = tmp_path / "pool.yaml"
    spec.write_text(
        f"name: fuzz\ndatasets:\n  - name: hippo\n    root: {tmp_path / 'hippo'}\n"
        "    modality: MRI\n    label_map: {1: anterior, 2: posterior}\n"
    )
    out = tmp_path / "out"
    code, err = _pool_build(spec, out, capfd)
    where = f"seed {SEED}, cases: {[f'{c}: {d}' for c, d in placed.items()]}\n{err}"
    assert code == 2 and "Traceback" not in err, where
    lines = err.strip().splitlines()
    assert lines[-1].startswith("medfoundry: error: "), where
    problems = [PROBLEM_LINE.match(line) for line in lines[:-1]]
    assert all(problems), where  # one line per problem, nothing else
    assert {m["case"] for m in problems} <= set(placed), where  # no intact case is blamed
    for case, d in named.items():
        assert any(m["case"] == case and m["file"] == str(d.path) for m in problems), (
            f"{d}\n{where}"
        )
    assert not out.exists() or not any(out.iterdir()), where

    code, err = _pool_build(spec, out, capfd, "--skip-invalid")
    assert code == 0, f"seed {SEED}: {err}"
    pool = json.loads((out / "pool.json").read_text())
    skipped = {(s["case"], s["file"]) for s in pool["skipped"]}
    assert {case for case, _ in skipped} == {m["case"] for m in problems}, where
    for case, d in named.items():
        assert (case, str(d.path)) in skipped, f"{d}: not in skipped {sorted(skipped)}"
    assert {c["id"] for c in pool["cases"]} == {
        f"hippo/{p.name[: -len('.nii.gz')]}" for p in (tmp_path / "hippo" / "labelsTr").iterdir()
    } - {case for case, _ in skipped}
