"""``scripts/gpu_smoke.py`` without a GPU: it skips every check cleanly, and its checks run as a dry run on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_smoke.py"
CHECKS = ["losses", "syncs", "nccl", "trials", "resnet32", "ray"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}  # no GPU, even on a GPU machine
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_without_cuda_every_check_is_skipped_and_the_exit_code_is_0():
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| check | result | time | detail |" in proc.stdout
    for name in CHECKS:
        assert f"| {name} | SKIP | 0.0 s | skipped: no CUDA |" in proc.stdout, proc.stdout


def test_the_loss_and_collective_checks_pass_as_a_cpu_dry_run():
    proc = _run("--device", "cpu", "--only", "losses", "syncs", "nccl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| losses | PASS |" in proc.stdout and "| nccl | PASS |" in proc.stdout, proc.stdout
    assert "| syncs | SKIP |" in proc.stdout and "sync debug mode is CUDA's" in proc.stdout


def test_a_failing_check_makes_the_exit_code_1(monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)

    def broken(device):
        raise AssertionError("wrong on purpose")

    monkeypatch.setitem(smoke.CHECKS, "broken", broken)
    assert smoke.main(["--device", "cpu", "--only", "broken"]) == 1
    out = capsys.readouterr().out
    assert "| broken | FAIL |" in out and "AssertionError: wrong on purpose" in out and "FAILED: ['broken']" in out
