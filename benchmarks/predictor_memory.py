"""Benchmark: peak memory of a ``Predictor`` holding a large model (default tsfm_b, 149M parameters).

A one-step run of the size on real hippocampus (pool build -> plan -> preprocess -> pretrain, all
through the ``medfoundry`` command) gives a real checkpoint (weights, optimizer state, config, plan);
then fresh processes measure their peak resident set size (``ru_maxrss``) for:

- ``baseline``: import torch and medfoundry and read one volume (the floor every row shares);
- ``load``: ``Predictor.from_checkpoint(run)`` on top of that, kept alive;
- ``predict``: the same, then ``predict`` of 3 volumes.

The weights alone are ``4 x parameters`` bytes (fp32), printed for reference.
Usage: ``python benchmarks/predictor_memory.py [--model tsfm_b]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, make_inputs, medfoundry, sets_args  # noqa: E402

from medfoundry.runs.checkpoint import find_checkpoint  # noqa: E402

PROBE = """
import json, resource, sys
import torch
from medfoundry.io import read_image
torch.set_num_threads(2)
images = [read_image(p) for p in json.loads(sys.argv[3])]
if sys.argv[1] != "baseline":
    from medfoundry.inference.predictor import Predictor
    predictor = Predictor.from_checkpoint(sys.argv[2], "cpu")
    if sys.argv[1] == "predict":
        for image in images:
            predictor.predict(image)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/medfoundry-bench-predmem"))
    ap.add_argument("--model", default="tsfm_b")
    ap.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64])
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    raw = make_inputs("hippocampus", args.data, args.work)
    pool, run = args.work / "pool", args.work / "run"
    if not find_checkpoint(run, "final"):
        medfoundry(["pool", "build", str(raw / "pool.yaml"), "-o", str(pool), "-j", "2"], env)
        patch = [str(p) for p in args.patch]
        medfoundry(["plan", str(pool), "--model", args.model, "--patch", *patch], env)
        medfoundry(["preprocess", str(pool), "-j", "2"], env)
        sets = ["epochs=1", "iters_per_epoch=1", "validation.every=0", "validation.final=false"]
        sets += ["batch_size=1"]
        sets += ["data.num_workers=0", "threads=2"]
        medfoundry(["pretrain", str(pool), "-o", str(run), "--model", args.model, *sets_args(sets)])
    images = sorted(str(p) for p in raw.rglob("imagesTr/*.nii.gz"))[:3]
    print(f"model {args.model}, patch {args.patch}, checkpoint folder {run / 'checkpoints'}:")
    for f in sorted((run / "checkpoints").iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 2**30:.3f} GB")
    rows = {}
    for what in ("baseline", "load", "predict"):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, what, str(run), json.dumps(images)],
            env=env,
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise SystemExit(out.stderr[-2000:])
        rows[what] = float(out.stdout.split()[-1])
    print(f"| {'process':<9} | peak RSS GB | over baseline GB |")
    print("|---|---|---|")
    for what, gb in rows.items():
        print(f"| {what:<9} | {gb:11.3f} | {gb - rows['baseline']:16.3f} |")


if __name__ == "__main__":
    main()
