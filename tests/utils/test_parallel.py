"""Worker pools never hang on a worker's failure, and every project error survives pickling."""

from __future__ import annotations

import inspect
import os
import pickle
import signal
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

import medfoundry
from medfoundry import MedfoundryError
from medfoundry.utils.parallel import map_with_progress


class _NeedsTwoArguments(Exception):
    def __init__(self, path, reason):  # pickles, but cannot be rebuilt from its args
        super().__init__(f"{path}: {reason}")


def _work(x: int) -> int:
    if x == 3:
        raise _NeedsTwoArguments("case3.nii.gz", "truncated")
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker killed by the kernel (out of memory)
    if x == 7:
        raise MedfoundryError("case7: bad")
    return x * x


def test_results_come_in_order_with_two_workers():
    assert list(map_with_progress(_work, [0, 1, 2, 4, 6], jobs=2, progress=False)) == [
        0,
        1,
        4,
        16,
        36,
    ]


def test_an_exception_that_cannot_be_rebuilt_is_raised_not_waited_for():
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="_NeedsTwoArguments: case3.nii.gz: truncated"):
        list(map_with_progress(_work, [0, 1, 2, 3, 4], jobs=2, progress=False))
    assert time.perf_counter() - started < 30


def test_a_project_error_keeps_its_type():
    with pytest.raises(MedfoundryError, match="case7: bad"):
        list(map_with_progress(_work, [6, 7, 8], jobs=2, progress=False))


def test_a_killed_worker_is_an_error_not_a_hang():
    started = time.perf_counter()
    with pytest.raises(BrokenProcessPool):
        list(map_with_progress(_work, [0, 1, 5, 2, 4], jobs=2, progress=False))
    assert time.perf_counter() - started < 30


def _project_error_classes() -> list[type]:
    """Every MedfoundryError subclass the package defines (its modules imported first)."""
    import pkgutil

    for mod in pkgutil.walk_packages(medfoundry.__path__, "medfoundry."):
        if mod.name.startswith("medfoundry.cli") or "__main__" in mod.name:
            continue
        __import__(mod.name)
    found, todo = [], [MedfoundryError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_project_error_survives_pickling():
    classes = _project_error_classes()
    assert len(classes) >= 3  # MedfoundryError, VolumeReadError, PoolValidationError at least
    for cls in classes:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        args = [[] if "problem" in p.name else f"value-of-{p.name}" for p in params]
        err = cls(*args) if params else cls("message")
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == str(err), cls
        assert back.__dict__ == err.__dict__, cls


def test_sigterm_stops_the_workers_quietly(tmp_path):
    """The parent stops its workers on SIGTERM; no worker prints a traceback."""
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\n"
        "from medfoundry.cli.main import Terminated, _terminated\n"
        "import signal\n"
        "from medfoundry.utils.parallel import map_with_progress\n"
        "def slow(x):\n    time.sleep(0.2)\n    return x\n"
        "signal.signal(signal.SIGTERM, _terminated)\n"
        "try:\n"
        "    for r in map_with_progress(slow, list(range(500)), jobs=2, progress=False):\n"
        "        print(r, flush=True)\n"
        "except Terminated:\n    sys.exit(143)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "0"  # the workers are running
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "workers outlived their parent"
