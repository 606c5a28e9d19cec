"""Latency checks can fail: a variant slower than its reference misses min_speedup, an absolute limit
fails on its own machine profile and skips (saying why) on another, and benchmarks that cannot run
fail a configured latency budget."""

from __future__ import annotations

import json

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


def test_without_a_budget_a_slower_variant_is_flagged_and_every_speedup_is_reported(tmp_path, run_gate):
    """No min_speedup anywhere: nothing fails, but the summary leads with the variant slower than its float model,
    and every timed variant's speedup is among the figures."""
    (tmp_path / "gate.toml").write_text(TINYBEAUTY.replace("budgets = { min_speedup = 0.5 }", "budgets = {}")
                                        .replace("budgets = { min_speedup = 0.9 }", "budgets = {}"))
    run = run_gate(tmp_path / "gate.toml", "-k", "test_speedup")
    assert run.returncode == 0, run.output
    summary = (run.reports / "summary.md").read_text()
    flagged = [line for line in summary.splitlines() if "is slower than tinybeauty-float" in line]
    mine = [line for line in flagged if line.startswith("- tinybeauty-onnx_int8_dynamic")]
    assert len(mine) == 1 and "gate it with min_speedup" in mine[0], summary
    assert "its convolutions run as ConvInteger" in mine[0] and "the likely cause" in mine[0]  # and why
    figures = json.loads((run.reports / "results.json").read_text())["figures"]
    assert figures["tinybeauty-onnx_int8_dynamic"]["speedup"] < 0.9  # about 0.25 on this CPU
    assert figures["tinybeauty-onnx"]["speedup"] > 0.5  # reported too, budget or not


def test_a_core_ml_speedup_budget_off_macos_is_not_measured_and_fails_under_strict(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(model_table("digits") + """
[models.digits.variants.float]
steps = []
budgets = {}

[models.digits.variants.coreml]
steps = [{ step = "coreml" }]
budgets = { min_speedup = 0.1 }
""")
    lenient = run_gate(tmp_path / "gate.toml", "-k", "test_speedup")
    assert lenient.returncode == 0 and "Core ML latency needs MLModel.predict" in lenient.output, lenient.output
    strict = run_gate(tmp_path / "gate.toml", "-k", "test_speedup", "--gate-strict")
    assert strict.returncode == 1, strict.output
    assert "(--gate-strict: min_speedup not measured)" in strict.line("Core ML latency needs MLModel.predict")


def test_an_absolute_latency_limit_fails_on_its_machine_one_test_case_per_budget(tmp_path, run_gate):
    config = DIGITS.replace("MACHINE", "here").replace("max_p50_ms = 0.0001",
                                                       "max_p50_ms = 0.0001, max_p95_ms = 0.0001, "
                                                       "max_memory_growth_mb = 1000")
    (tmp_path / "gate.toml").write_text(config)
    run = run_gate(tmp_path / "gate.toml", "-m", "latency", "--junitxml", str(tmp_path / "junit.xml"))
    assert run.returncode == 1, run.output
    assert "median latency" in run.line("digits-float: median latency")
    assert "95th-percentile latency" in run.line("digits-float: 95th-percentile latency")
    failed = {line.split("::")[1].split(" ")[0] for line in run.lines("FAILED")}
    assert failed == {"test_latency[digits-float]", "test_latency_p95_limit[digits-float]"}, failed
    junit = (tmp_path / "junit.xml").read_text()  # one test case per budget, each with its own value
    for name, key in (("test_latency", "max_p50_ms"), ("test_latency_p95_limit", "max_p95_ms"),
                      ("test_memory_growth_limit", "max_memory_growth_mb")):
        case = junit.split(f'name="{name}[digits-float]"')[1].split("</testcase>")[0]
        assert f'name="{key}"' in case, (name, case)


def test_an_absolute_latency_limit_skips_with_its_reason_on_another_machine(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(DIGITS.replace("MACHINE", "elsewhere"))
    run = run_gate(tmp_path / "gate.toml", "-m", "latency")
    assert run.returncode == 0, run.output
    assert "holds on machine profile 'elsewhere'" in run.line("SKIPPED")
    strict = run_gate(tmp_path / "gate.toml", "-m", "latency", "--gate-strict")  # CI's default: it fails
    assert strict.returncode == 1, strict.output
    assert "(--gate-strict: max_p50_ms not measured)" in strict.line("holds on machine profile 'elsewhere'")
    doc = json.loads((strict.reports / "results.json").read_text())
    assert [(c["check"], c["verdict"]) for c in doc["checks"]] == [("max_p50_ms", "not measured")]
    summary = (strict.reports / "summary.md").read_text()
    assert "0 of 1 checks passed; 0 failed; 1 not measured" in summary and "## What failed" in summary


def test_latency_budgets_with_benchmarks_disabled_fail_instead_of_passing(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(DIGITS.replace("MACHINE", "here"))
    run = run_gate(tmp_path / "gate.toml", "-m", "latency", "--benchmark-disable")
    assert run.returncode == 1, run.output
    assert run.lines("latency budgets set, but timing is disabled (--benchmark-disable)")


def test_memory_growth_sees_a_leak_that_stays_under_an_earlier_peak():
    """max_memory_growth_mb: a runner that keeps 2 MB per call fails it, though the process's peak memory (which
    never falls) was already higher before the timed calls; a runner that keeps nothing passes."""
    import numpy as np

    from tinygate import latency

    spike = np.ones(40_000_000)  # 320 MB, then freed: the peak now sits far above what the leak will reach
    del spike
    kept: list = []

    def leaking(x):
        kept.append(np.ones(250_000) + x)  # 2 MB per call, never freed
        return x

    for runner, leaks in ((leaking, True), (lambda x: x + 1, False)):
        before = latency.rss_mb()
        latency.timings(runner, (1.0,), rounds=30, warmup=5)
        growth = latency.rss_mb() - before
        assert (growth > 50) is leaks, growth  # a 10 MB budget fails the leak and passes the clean runner
