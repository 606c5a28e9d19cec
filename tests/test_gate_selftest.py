"""The gate catches the regressions it guards against: each test injects one and runs a real gate.

Each case runs `pytest model_tests` in a subprocess on a small config written for it, so what is
checked is the exit status and the lines a user would read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bundled import model_table
from safetensors.numpy import load_file, save_file

from tinygate import config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tinybeauty(weights: Path, budgets: str) -> str:
    return model_table("tinybeauty", weights) + f"""
[models.tinybeauty.variants.float]
steps = []
budgets = {{ {budgets} }}
"""


def digits(size_kb: float) -> str:
    return model_table("digits") + f"""
[models.digits.variants.float]
steps = []
budgets = {{ min_accuracy_pct = 97 }}

[models.digits.variants.onnx_int8]
steps = [{{ step = "onnx_export" }}, {{ step = "ort_int8_dynamic" }}]
budgets = {{ max_size_kb = {size_kb}, min_accuracy_pct = 97, max_accuracy_drop_pct = 1 }}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(text)
    return path


def test_unchanged_bundled_weights_pass(tmp_path, run_gate):
    run = run_gate(write(tmp_path, digits(size_kb=40)), cache=tmp_path / "cache")  # cold: says what it builds
    assert run.returncode == 0, run.output
    assert run.lines("tinygate: digits-") and "building, step" in run.output  # a cold run says what it does
    assert "evaluating on 500 inputs" in run.output
    doc = json.loads((run.reports / "results.json").read_text())
    assert doc["checks"] and all(c["passed"] for c in doc["checks"])
    assert (run.reports / "summary.md").is_file() and not list(run.reports.glob("*.png"))  # --no-gate-plots


def test_weights_perturbed_by_ten_percent_of_their_std_fail_the_quality_floors(tmp_path, run_gate):
    rng = np.random.default_rng(0)
    tensors = load_file(REPO / "weights/tinybeauty.safetensors")
    noisy = {k: (v + rng.normal(0, 0.1 * v.std(), v.shape)).astype(v.dtype) for k, v in tensors.items()}
    save_file(noisy, tmp_path / "noisy.safetensors")
    shipped = config.load(REPO / "gate.toml").models["tinybeauty"].variants["float"].budgets
    budgets = ", ".join(f"{k} = {v}" for k, v in shipped.items())  # the budgets gate.toml ships
    run = run_gate(write(tmp_path, tinybeauty(tmp_path / "noisy.safetensors", budgets)))
    assert run.returncode == 1, run.output
    failed = run.lines("FAILED model_tests/test_quality.py::")
    assert any("test_psnr_floor[tinybeauty-float]" in line for line in failed), run.output
    assert run.lines("tinybeauty-float: mean PSNR"), run.output
    assert not run.lines("FAILED model_tests/test_size.py")  # the size did not change


def test_a_size_budget_below_the_artifact_fails_the_size_check(tmp_path, run_gate):
    run = run_gate(write(tmp_path, digits(size_kb=5)))
    assert run.returncode == 1, run.output
    assert run.lines("FAILED model_tests/test_size.py::test_size_budget[digits-onnx_int8]")
    assert run.lines("digits-onnx_int8: size on disk")
    doc = json.loads((run.reports / "results.json").read_text())
    (size,) = [c for c in doc["checks"] if c["check"] == "max_size_kb"]
    assert size["passed"] is False and size["value"] > 5


def test_a_config_typo_stops_the_run_before_any_test_with_one_line(tmp_path, run_gate):
    text = digits(size_kb=40).replace("min_accuracy_pct = 97 }",
                                                                                       "min_acuracy_pct = 97 }", 1)
    run = run_gate(write(tmp_path, text))
    assert run.returncode == 4, run.output
    line = run.line("gate stopped")
    assert "models.digits.variants.float.budgets.min_acuracy_pct: unknown key" in line
    assert "Traceback" not in run.output


def test_a_step_that_raises_fails_the_run_never_skips_or_passes(tmp_path, run_gate):
    (tmp_path / "break_export.py").write_text(
        "import tinygate.steps.onnx_steps as s\n"
        "def export(*args, **kwargs):\n"
        "    raise RuntimeError('exporter exploded')\n"
        "s.export = export\n")
    run = run_gate(write(tmp_path, digits(size_kb=40)), "-m", "not regression",  # those skip: no baseline here
                   "-p", "break_export", env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 1, run.output
    assert run.lines("digits-onnx_int8: step onnx_export: failed: RuntimeError: exporter exploded")
    errors = run.lines("ERROR model_tests/")
    assert errors and all("digits-onnx_int8" in e for e in errors), run.output  # every check of it errs
    assert "skipped" not in run.output.splitlines()[-1]


def test_under_xdist_the_workers_checks_reach_the_reports(tmp_path, run_gate):
    config = write(tmp_path, digits(size_kb=30))
    serial = run_gate(config, "-m", "not latency", "-p", "no:xdist")
    serial_checks = json.loads((serial.reports / "results.json").read_text())["checks"]
    parallel = run_gate(config, "-m", "not latency", "-n", "2")
    assert parallel.returncode == 0, parallel.output[-3000:]
    checks = json.loads((parallel.reports / "results.json").read_text())["checks"]
    key = lambda c: (c["variant"], c["check"], c["value"])  # noqa: E731
    assert checks and sorted(map(key, checks)) == sorted(map(key, serial_checks))
