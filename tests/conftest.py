"""Shared fixtures.

Real data is found through one setting, ``MEDFOUNDRY_DATA`` (default ``../shared/data`` next to the
repository). Tests that need it skip with a reason when it is absent, unless
``MEDFOUNDRY_REQUIRE_DATA=1`` (set by ``.ci/run``), where its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDFOUNDRY_DATA", REPO.parent / "shared" / "data")).resolve()
HIPPO = DATA / "msd_task04_hippocampus"
ACDC = DATA / "acdc"
FAST_FIT = [  # a few CPU steps of training: enough to exercise a run folder end to end
    "epochs=1",
    "iters_per_epoch=3",
    "batch_size=2",
    "patch_size=[16, 32, 32]",
    "data.num_workers=0",
    "validation.max_cases=1",
    "threads=1",
]


def _require(path: Path) -> Path:
    if not path.exists():
        msg = f"real data not found at {path} (set MEDFOUNDRY_DATA)"
        if os.environ.get("MEDFOUNDRY_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session", autouse=True)
def _own_cache_dir(tmp_path_factory):
    """Caches (the CPU bf16 check's verdicts) go to a folder of this test session, not ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _require(DATA)


@pytest.fixture(scope="session")
def hippo_dir() -> Path:
    return _require(HIPPO)


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    return _require(ACDC)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic pool source (3 cases per dataset), made once per test session."""
    from medfoundry.synth import write_synthetic_datasets

    out = tmp_path_factory.mktemp("synth")
    write_synthetic_datasets(out, cases=3, seed=7, progress=False)
    return out


def copy_hippo_cases(hippo: Path, dest: Path, n: int = 6) -> Path:
    """Copy the first ``n`` real hippocampus cases (MSD layout) into ``dest`` to damage safely."""
    cases = sorted(p.name for p in (hippo / "labelsTr").glob("*.nii.gz"))[:n]
    for sub in ("imagesTr", "labelsTr"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for c in cases:
            shutil.copy(hippo / sub / c, dest / sub / c)
    shutil.copy(hippo / "dataset.json", dest / "dataset.json")
    return dest


@pytest.fixture(scope="session")
def real_small_pool(tmp_path_factory, hippo_dir, acdc_dir):
    """The real pool built, planned (tsfm_test, 16x32x32, batch 2) and preprocessed once per test
    session; ACDC limited to its val.list volumes to keep it quick."""
    from medfoundry.planning import make_plan
    from medfoundry.pool import build_pool
    from medfoundry.preprocessing import preprocess_pool
    from tests.pool.test_build import REAL_POOL

    tmp = tmp_path_factory.mktemp("datapool")
    spec = tmp / "pool.yaml"
    spec.write_text(
        REAL_POOL.format(hippo=hippo_dir, acdc=acdc_dir).replace(
            "[train.list, val.list]", "[val.list]"
        )
    )
    build_pool(spec, tmp / "pool", jobs=2, progress=False)
    make_plan(tmp / "pool", model="tsfm_test", patch_size_vox=[16, 32, 32], batch_size=2)
    preprocess_pool(tmp / "pool", jobs=2, progress=False)
    return tmp / "pool"


@pytest.fixture(scope="session")
def pretrained(real_small_pool, tmp_path_factory):
    """A tsfm_test run folder on the small real pool (hippocampus + ACDC), 3 steps, made once."""
    from medfoundry.training.config import TrainConfig, apply_overrides
    from medfoundry.training.fit import pretrain

    run = tmp_path_factory.mktemp("pre") / "run"
    cfg = apply_overrides(TrainConfig(), ["model=tsfm_test", *FAST_FIT])
    pretrain(real_small_pool, run, cfg, progress=False)
    return run


@pytest.fixture(scope="session")
def promptable_run(real_small_pool, tmp_path_factory):
    """A promptable tsfm_test run folder on the small real pool, 3 steps, made once."""
    from medfoundry.training.config import TrainConfig, apply_overrides
    from medfoundry.training.fit import pretrain

    run = tmp_path_factory.mktemp("promptable") / "run"
    cfg = apply_overrides(TrainConfig(), ["model=tsfm_test", "task=promptable", *FAST_FIT])
    pretrain(real_small_pool, run, cfg, progress=False)
    return run


@pytest.fixture(scope="session")
def medmnist_dir(data_dir) -> Path:
    return _require(data_dir / "medmnist")


@pytest.fixture(scope="session")
def pneumonia_classifier(medmnist_dir, tmp_path_factory):
    """A tsfm_test classifier trained on real PneumoniaMNIST for 40 steps (batch 64), made once:
    (run folder, its train_classifier result)."""
    from medfoundry.training.config import TrainConfig
    from medfoundry.workflows.classify import train_classifier

    run = tmp_path_factory.mktemp("pneumonia") / "run"
    cfg = TrainConfig(model="tsfm_test", epochs=2, iters_per_epoch=20, batch_size=64, threads=2)
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay = "adamw", 1e-3, 0.05
    cfg.data.num_workers = 0
    result = train_classifier(medmnist_dir / "pneumoniamnist.npz", run, cfg, progress=False)
    return run, result
