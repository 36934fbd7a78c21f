"""The CPU bf16 training check: a child process runs one step; its verdict is cached per machine."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from medfoundry.training import amp_check
from medfoundry.training import setup as fit
from medfoundry.training.config import TrainConfig

TINY = {
    "name": "tsfm_test",
    "overrides": {},
    "in_channels": 1,
    "patch_size": [8, 16, 16],
    "strides": [[1, 1, 1], [1, 2, 2]],
    "head": {"kind": "segmentation", "num_outputs": 3, "deep_supervision": False},
}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "medfoundry" / "bf16_checks.json"


def test_a_working_network_passes_and_the_verdict_is_cached(cache, monkeypatch):
    ok, why = amp_check.cpu_bf16_training_ok(TINY, 2, 1)
    assert ok, why
    assert "of fp32 ones" in why
    assert [v["ok"] for v in json.loads(cache.read_text()).values()] == [True]

    def no_child(*a, **k):
        raise AssertionError("the cached verdict should have been used")

    monkeypatch.setattr(subprocess, "run", no_child)
    assert amp_check.cpu_bf16_training_ok(TINY, 2, 1) == (ok, why)
    with pytest.raises(AssertionError):  # another batch size is another network run: not cached
        amp_check.cpu_bf16_training_ok(TINY, 3, 1)


def test_a_child_that_dies_means_fp32(cache):
    broken = {**TINY, "strides": [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2], [1, 2, 2]]}
    ok, why = amp_check.cpu_bf16_training_ok(broken, 2, 1)  # 6 stages: tsfm_test has 4 at most
    assert not ok
    assert why == "a bf16 training step died (exit code 1) in a test process"


def test_wrong_bf16_gradients_mean_fp32(monkeypatch):
    monkeypatch.setattr(amp_check, "MAX_REL_ERROR", 0.0)
    verdict = amp_check._child({"model": TINY, "batch_size": 2, "threads": 1})
    assert not verdict["ok"]
    assert verdict["reason"].startswith("bf16 gradients differ from fp32 ones by")


def test_nan_bf16_gradients_mean_fp32(monkeypatch):
    """A NaN error compares False with any limit: it must fail the check, not pass it."""
    real = amp_check._step_grads

    def nan_in_bf16(net, x, bf16):
        grads = real(net, x, bf16)
        return grads.index_fill(0, amp_check.torch.tensor([0]), float("nan")) if bf16 else grads

    monkeypatch.setattr(amp_check, "_step_grads", nan_in_bf16)
    verdict = amp_check._child({"model": TINY, "batch_size": 2, "threads": 1})
    assert verdict == {"ok": False, "reason": "bf16 gradients are not finite (NaN or inf)"}


def test_training_falls_back_to_fp32_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(fit, "bf16_native", lambda device: True)
    monkeypatch.setattr(fit, "cpu_bf16_training_ok", lambda *a: (False, "it hung"))
    cpu = fit.torch.device("cpu")
    with caplog.at_level(logging.WARNING):
        assert fit._training_amp(TrainConfig(), cpu, TINY, 2) is False
    assert "bf16 autocast is off for this run (training in fp32): it hung" in caplog.text
    assert fit._training_amp(TrainConfig(amp=False), cpu, TINY, 2) is False
    monkeypatch.setattr(fit, "cpu_bf16_training_ok", lambda *a: (True, "fine"))
    assert fit._training_amp(TrainConfig(), cpu, TINY, 2) is True
