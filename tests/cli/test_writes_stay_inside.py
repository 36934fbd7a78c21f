"""A property: no command writes outside the output folder it was given.

Every command that writes runs in a sandbox (its own working directory, HOME and TMPDIR, the inputs
beside them) and the whole sandbox is compared before and after: every new or changed file must lie
in that command's output, nothing else may change, and nothing may be left in TMPDIR. The one write
outside by design is the per-machine cache (``XDG_CACHE_HOME``: the CPU bf16 check's verdicts), which
the test session points elsewhere. Names that would reach outside (path separators, ``..``) are
refused in one line, with nothing written anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfoundry.io import read_image
from tests.conftest import FAST_FIT, copy_hippo_cases
from tests.io.synthetic_dicom import write_series

TINY = ["--model", "tsfm_test", *(x for kv in FAST_FIT for x in ("--set", kv))]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: relative path -> (size, mtime in ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


class Sandbox:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("cwd", "home", "tmp", "in", "out"):
            (root / sub).mkdir()
        self.env = {
            **os.environ,
            "HOME": str(root / "home"),
            "TMPDIR": str(root / "tmp"),
            "MEDFOUNDRY_DEBUG": "",
        }

    def run(self, args: list, output: str | None, expect: int = 0) -> str:
        """Run ``medfoundry args`` in the sandbox; return stderr. ``output``: the folder (relative to
        the sandbox) it may write in; None: it may write nothing."""
        before = snapshot(self.root)
        r = subprocess.run(
            [sys.executable, "-m", "medfoundry.cli.main", "-q", *map(str, args)],
            cwd=self.root / "cwd",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == expect, f"{args}: rc {r.returncode}\n{r.stderr[-2000:]}"
        after = snapshot(self.root)
        changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
        allowed = {"tmp"} | ({output, str(Path(output).parent)} if output else set())
        outside = sorted(
            p for p in changed if not (output and (p == output or p.startswith(output + "/")))
        )
        outside = [p for p in outside if p not in allowed]  # its parent's and TMPDIR's mtimes
        assert not outside, f"{args} wrote outside {output}: {outside[:10]}"
        assert not list((self.root / "tmp").iterdir()), f"{args} left files in TMPDIR"
        return r.stderr

    def path(self, rel: str) -> Path:
        return self.root / rel


@pytest.fixture
def box(tmp_path, hippo_dir) -> Sandbox:
    sb = Sandbox(tmp_path)
    copy_hippo_cases(hippo_dir, sb.path("in/hippo"), n=4)
    image = read_image(sorted(sb.path("in/hippo/imagesTr").glob("*.nii.gz"))[0])
    stored = np.round(image.array[0]).astype(np.int16)
    write_series(sb.path("in/dicom"), stored, tuple(image.spacing_mm), modality="MR", intercept=0)
    sb.path("in/pool.yaml").write_text(
        "name: p\ndatasets:\n  - name: hippocampus\n    root: hippo\n    modality: MRI\n"
    )
    return sb


@pytest.mark.slow
def test_every_command_writes_only_in_its_output(box):
    p = box.path
    box.run(["synth", "-o", p("out/synth"), "--cases", "1", "-j", "1"], "out/synth")
    box.run(["pool", "build", p("in/pool.yaml"), "-o", p("out/pool")], "out/pool")
    plan = ["plan", p("out/pool"), "--model", "tsfm_test", "--patch", "16", "32", "32"]
    box.run([*plan, "--batch-size", "2"], "out/pool")
    box.run(["preprocess", p("out/pool"), "-j", "2"], "out/pool")
    box.run(["pretrain", p("out/pool"), "-o", p("out/run"), *TINY], "out/run")
    box.run(["pretrain", "--resume", p("out/run"), "--epochs", "2"], "out/run")
    box.run(["models", "save", p("out/run"), "-o", p("out/model/m.safetensors")], "out/model")
    ft = ["finetune", "--from", p("out/model/m.safetensors"), "--data", p("in/hippo")]
    box.run([*ft, "-o", p("out/ft"), *TINY[2:], "-j", "2"], "out/ft")
    images = p("in/hippo/imagesTr")
    box.run(["predict", "-m", p("out/run"), "-i", images, "-o", p("out/pred")], "out/pred")
    box.run(["predict", "-m", p("out/run"), "-i", images, "-o", p("out/pred")], "out/pred")
    refs = p("in/hippo/labelsTr")
    box.run(["evaluate", p("out/pred"), refs, "-o", p("out/eval/s.json")], "out/eval")
    report = ["report", "-l", p("out/pred"), "-i", images, "-m", p("out/run")]
    box.run([*report, "-o", p("out/report")], "out/report")
    box.run(["deid", p("in/dicom"), p("out/deid")], "out/deid")
    seg = ["predict", "-m", p("out/run"), "-i", p("in/dicom"), "--output-type", "dicom-seg"]
    box.run([*seg, "--report", "-o", p("out/seg")], "out/seg")
    job = ["run", "-o", p("out/main"), "--model", "tsfm_test", "--synth-cases", "2"]
    job += ["--pretrain-steps", "2", "--finetune-epochs", "1", "--finetune-iters", "2"]
    job += ["--patch", "16", "32", "32", "--set", "data.num_workers=0", "-j", "1"]
    box.run(job, "out/main")


@pytest.mark.parametrize(
    "where,text",
    [
        ("dataset name", "name: p\ndatasets:\n  - name: ../../evil\n    root: hippo\n"),
        (
            "case list entry",
            "name: p\ndatasets:\n  - name: h\n    root: hippo\n    images: imagesTr/{case}.nii.gz\n"
            "    labels: labelsTr/{case}.nii.gz\n    case_lists: [cases.list]\n",
        ),
    ],
)
def test_a_name_that_reaches_outside_is_refused_and_nothing_is_written(box, where, text):
    box.path("in/hippo/cases.list").write_text("hippocampus_001\n../../../../somewhere/x\n")
    box.path("in/evil.yaml").write_text(text + "    modality: MRI\n")
    err = box.run(["pool", "build", box.path("in/evil.yaml"), "-o", box.path("out/p")], None, 2)
    assert err.startswith("medfoundry: error:") and len(err.strip().splitlines()) == 1, err
    assert not box.path("out/p").exists()


def test_a_hand_edited_pool_file_cannot_send_preprocess_outside(box):
    p = box.path
    box.run(["pool", "build", p("in/pool.yaml"), "-o", p("out/pool")], "out/pool")
    plan = ["plan", p("out/pool"), "--model", "tsfm_test", "--patch", "16", "32", "32"]
    box.run(plan, "out/pool")
    pool = json.loads(p("out/pool/pool.json").read_text())
    pool["cases"][0]["id"] = "hippocampus/../../../../escaped"
    p("out/pool/pool.json").write_text(json.dumps(pool))
    err = box.run(["preprocess", p("out/pool"), "-j", "1"], "out/pool", expect=2)
    assert "escaped" in err and len(err.strip().splitlines()) == 1, err
    assert not list(box.root.rglob("escaped*"))


def test_a_benchmark_direction_named_outside_is_refused(box):
    box.path("in/bench.yaml").write_text(
        "directions:\n  - name: ../../evil\n    pool: [acdc]\n    target: hippocampus\n"
    )
    args = ["benchmark", "transfer", "--data", box.path("in"), "-o", box.path("out/b")]
    err = box.run([*args, "--preset", box.path("in/bench.yaml")], None, 2)
    assert "direction name" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
def test_the_transfer_benchmark_writes_only_in_its_output(box, data_dir):
    from tests.transfer.test_transfer_benchmark import TINY as BENCH

    box.path("in/tiny.yaml").write_text(BENCH.replace("ks: [1, 2]", "ks: [1]"))
    data_before = snapshot(data_dir)
    args = ["benchmark", "transfer", "--data", data_dir, "-o", box.path("out/b")]
    box.run([*args, "--preset", box.path("in/tiny.yaml"), "-j", "2"], "out/b")
    assert snapshot(data_dir) == data_before, "the benchmark wrote into the data folder"
