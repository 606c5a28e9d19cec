"""Cache integrity under a kill: a gate run killed (SIGKILL) while a step writes its artifact leaves no entry
behind that a later run would trust; running again gives the same results as a run on a clean cache."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundled import REPO, model_table

pytestmark = pytest.mark.slow

VARIANTS = """
[models.digits.variants.float]
steps = []
budgets = { max_size_kb = 45, min_accuracy_pct = 97 }

[models.digits.variants.onnx_int8_static]
steps = [{ step = "onnx_export" }, { step = "ort_int8_static" }]
budgets = { max_size_ratio = 0.45, min_accuracy_pct = 97, min_output_sqnr_db = 20 }

[models.digits.variants.coreml_int8]
steps = [{ step = "coreml" }, { step = "coreml_int8" }]
budgets = { max_size_kb = 19, min_accuracy_pct = 97 }
"""


def _gate_cmd(config: Path, cache: Path, reports: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", str(REPO / "model_tests"), "-p", "no:cacheprovider", "-q",
            "--no-gate-strict", "-m", "not latency", f"--gate-config={config}", f"--gate-cache-dir={cache}",
            f"--gate-reports-dir={reports}"]


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}


def _writing(cache: Path) -> bool:
    """True once a step's temporary build folder holds its artifact: the run is writing it."""
    try:
        return any(name.endswith((".onnx", ".mlpackage")) for d in cache.iterdir()
                   if d.name.startswith(".") and d.is_dir() for name in os.listdir(d))
    except FileNotFoundError:  # a build folder renamed into place while we looked
        return False


def _checks(reports: Path) -> list[tuple]:
    results = json.loads((reports / "latest" / "results.json").read_text())
    return sorted((c["variant"], c["check"], c["value"], c["passed"]) for c in results["checks"])


def test_a_run_killed_while_writing_artifacts_then_rerun_matches_a_clean_run(tmp_path):
    config = tmp_path / "gate.toml"
    config.write_text(model_table("digits", calibration=True) + VARIANTS)
    cache = tmp_path / "cache"
    cache.mkdir()

    proc = subprocess.Popen(_gate_cmd(config, cache, tmp_path / "killed"), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # Stop the run the moment an artifact is being written, then check it still is: a build can finish and be
        # renamed into place between a look and a kill, so a stop that came too late resumes the run and waits
        # for the next step's build.
        deadline = time.monotonic() + 300
        caught = False
        while not caught and proc.poll() is None and time.monotonic() < deadline:
            if _writing(cache):
                os.killpg(proc.pid, signal.SIGSTOP)
                os.waitpid(proc.pid, os.WUNTRACED)  # killpg returns before the stop takes effect
                caught = _writing(cache)
                if not caught:
                    os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.005)
        assert caught, "the gate finished before it was caught writing an artifact"
    finally:
        with contextlib.suppress(ProcessLookupError):  # it ended on its own: the assertion above says so
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "killed" / "latest" / "results.json").exists()
    assert [p for p in cache.glob(".*") if p.is_dir()], "the kill should have left a temporary build folder"
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert all((p / ".complete").is_file() for p in entries), "an entry a later run would trust is incomplete"

    rerun = subprocess.run(_gate_cmd(config, cache, tmp_path / "rerun"), cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    clean = subprocess.run(_gate_cmd(config, tmp_path / "clean_cache", tmp_path / "clean"), cwd=REPO, env=_env(),
                           capture_output=True, text=True, timeout=900)
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert _checks(tmp_path / "rerun") == _checks(tmp_path / "clean")
