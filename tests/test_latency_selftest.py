"""Latency checks can fail: a variant slower than its reference misses min_speedup, an absolute limit
fails on its own machine profile and skips (saying why) on another, and benchmarks that cannot run
fail a configured latency budget."""

from __future__ import annotations

import pytest
from bundled import model_table

from tinygate import latency

pytestmark = pytest.mark.slow

TINYBEAUTY = model_table("tinybeauty") + """
[models.tinybeauty.variants.float]
steps = []
budgets = {}

[models.tinybeauty.variants.onnx]
steps = [{ step = "onnx_export" }]
budgets = { min_speedup = 0.5 }

# ONNX Runtime's ConvInteger runs this model about ten times slower than float: a real slowdown
[models.tinybeauty.variants.onnx_int8_dynamic]
steps = [{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]
budgets = { min_speedup = 0.9 }
"""

DIGITS = f"""
[machines.here]
cpu_model = "{latency.cpu_model()}"

[machines.elsewhere]
cpu_model = "Apple M3 Max"

""" + model_table("digits") + """
[models.digits.variants.float]
steps = []
machine = "MACHINE"
budgets = { max_p50_ms = 0.0001 }
"""


def test_a_slower_variant_fails_its_speedup_and_a_fast_one_passes(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(TINYBEAUTY)
    run = run_gate(tmp_path / "gate.toml", "-k", "test_speedup", "--gate-latency-rounds=10")
    assert run.returncode == 1, run.output
    assert run.lines("FAILED model_tests/test_latency.py::test_speedup[tinybeauty-onnx_int8_dynamic]")
    assert not run.lines("FAILED model_tests/test_latency.py::test_speedup[tinybeauty-onnx]")
    assert "speedup over the reference variant" in run.line("tinybeauty-onnx_int8_dynamic: speedup")


def test_an_absolute_latency_limit_fails_on_its_machine(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(DIGITS.replace("MACHINE", "here"))
    run = run_gate(tmp_path / "gate.toml", "-m", "latency")
    assert run.returncode == 1, run.output
    assert "median latency" in run.line("digits-float: median latency")


def test_an_absolute_latency_limit_skips_with_its_reason_on_another_machine(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(DIGITS.replace("MACHINE", "elsewhere"))
    run = run_gate(tmp_path / "gate.toml", "-m", "latency")
    assert run.returncode == 0, run.output
    assert "hold on machine profile 'elsewhere'" in run.line("SKIPPED")


def test_latency_budgets_with_benchmarks_disabled_fail_instead_of_passing(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(DIGITS.replace("MACHINE", "here"))
    run = run_gate(tmp_path / "gate.toml", "-m", "latency", "--benchmark-disable")
    assert run.returncode == 1, run.output
    assert run.lines("latency budgets set, but timing is disabled (--benchmark-disable)")
