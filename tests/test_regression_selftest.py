"""Self-tests of the baseline and the regression checks: each injects the regression it guards against
(perturbed weights, a bloated artifact, a slower model, other evaluation data, small drops that add up) into
a candidate compared with an accepted baseline of the bundled digits model, and shows the gate failing on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundled import REPO, model_table
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.slow

VARIANTS = """
[models.digits.variants.float]
steps = []
budgets = { min_accuracy_pct = 90 }

[models.digits.variants.onnx_int8_static]
steps = [{ step = "onnx_export" }, { step = "ort_int8_static" }]
budgets = { min_accuracy_pct = 90 }
"""

SLOWER = '''
import torch
from tinygate.zoo.digits import build as digits


class ThreeTimes(torch.nn.Module):
    """The digits model, computed three times: the same weights and outputs, three times the work."""

    def __init__(self):
        super().__init__()
        self.net = digits()

    def forward(self, x):
        return (self.net(x) + self.net(x) + self.net(x)) / 3

    def load_state_dict(self, state, strict=True, assign=False):
        return self.net.load_state_dict(state, strict=strict, assign=assign)


def build():
    return ThreeTimes()
'''


def _perturbed(tmp: Path, scale: float, name: str) -> Path:
    state = load_file(REPO / "weights/digits.safetensors")
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + scale * v.std() * torch.randn(v.shape, generator=gen) if v.numel() > 1 else v
             for k, v in state.items()}
    save_file(noisy, tmp / name)
    return tmp / name


@pytest.fixture
def gate(tmp_path, run_gate):
    """Write a digits config (optionally other weights, data, a factory or [regression] settings) and run it
    against the baseline kept in tmp_path/reports/baseline."""
    def run(*args: str, weights: Path | None = None, eval_spec: str | None = None, regression: str = "",
            factory: str | None = None, variants: str = VARIANTS):
        text = model_table("digits", weights, eval_spec, calibration=True) + variants
        if factory:
            text = text.replace('factory = "tinygate.zoo.digits:build"', f'factory = "{factory}"')
        config = tmp_path / "gate.toml"
        config.write_text((f"[regression]\n{regression}\n" if regression else "") + text)
        return run_gate(config, *args, "-p", "no:logging")
    return run


@pytest.fixture(scope="module")
def accepted_once(tmp_path_factory) -> Path:
    """The digits config accepted as the baseline once per module (and worker): its reports (its artifacts are in
    the run's shared cache)."""
    from conftest import gate_process

    root = tmp_path_factory.mktemp("accepted")
    (root / "gate.toml").write_text(model_table("digits", calibration=True) + VARIANTS)
    run = gate_process(root, root / "gate.toml", "--gate-accept-baseline", "--reason", "release 1.0",
                       "-p", "no:logging", "--gate-plots")
    assert run.returncode == 0, run.output[-3000:]
    assert "baseline accepted" in run.output
    return root


@pytest.fixture
def accepted(accepted_once, tmp_path) -> Path:
    """A copy of the accepted baseline in this test's folder."""
    shutil.copytree(accepted_once / "reports", tmp_path / "reports", symlinks=True)
    return tmp_path / "reports" / "baseline"


def test_accepting_writes_figures_hashes_artifacts_scores_and_a_history_line(accepted, tmp_path):
    doc = json.loads((accepted / "baseline.json").read_text())
    assert doc["reason"] == "release 1.0" and doc["machine"]["id"] and doc["data"]["digits"]
    for vid in ("digits-float", "digits-onnx_int8_static"):
        v = doc["variants"][vid]
        assert (accepted / v["artifact_path"]).exists() and v["bytes"] > 0 and v["accuracy_pct"] > 90
        assert (accepted / "scores" / f"{vid}.npz").is_file()
    assert (accepted / "first" / "baseline.json").is_file()
    history = [json.loads(line) for line in (tmp_path / "reports/history.jsonl").read_text().splitlines()]
    assert history[-1]["baseline"] is True and history[-1]["reason"] == "release 1.0"
    assert (tmp_path / "reports/latest/trend.png").stat().st_size > 0


def test_an_unchanged_candidate_passes_every_regression_check(accepted, gate):
    run = gate("-m", "regression")
    assert run.returncode == 0, run.output[-3000:]
    # size, quality, drift, 2 latency x 2 variants; the float model's outputs; no baseline variant missing
    assert "12 passed" in run.output.splitlines()[-1]


def test_a_failing_run_cannot_become_the_baseline(gate, tmp_path):
    weights = _perturbed(tmp_path, 1.0, "broken.safetensors")  # 89.6% accuracy: under the 90% floor
    run = gate("--gate-accept-baseline", "--reason", "should not stick", weights=weights)
    assert run.returncode != 0
    assert "baseline NOT accepted: this run did not pass" in run.output
    assert not (tmp_path / "reports/baseline").exists()


def test_perturbed_weights_fail_the_paired_accuracy_check(accepted, gate, tmp_path):
    noisy = _perturbed(tmp_path, 0.6, "noisy.safetensors")  # 96.4% vs 98.4%
    run = gate("-m", "regression and not latency", weights=noisy)
    assert run.returncode == 1
    line = run.line("digits-float: regressed against the baseline: accuracy_change_vs_baseline")
    assert "McNemar" in line and "turned wrong" in line


def test_a_bloated_artifact_fails_the_size_growth_check(accepted, gate, tmp_path):
    state = load_file(REPO / "weights/digits.safetensors")
    save_file(state, tmp_path / "bloated.safetensors", metadata={"notes": "x" * 50_000})
    run = gate("-m", "regression and not latency", weights=tmp_path / "bloated.safetensors")
    assert run.returncode == 1
    assert "digits-float: regressed against the baseline: size_growth_vs_baseline" in run.output
    assert "digits-onnx_int8_static" not in run.line("FAILED")  # the same weights export to the same ONNX


def test_a_slower_model_fails_the_interleaved_latency_check(accepted, gate, tmp_path):
    (tmp_path / "slower.py").write_text(SLOWER)
    run = gate("-m", "regression and latency", "-k", "float", factory="slower:build")
    assert run.returncode == 1, run.output[-3000:]
    line = run.line("digits-float: regressed against the baseline: latency_ratio_vs_baseline")
    assert "Wilcoxon" in line and "interleaved rounds" in line


def test_a_baseline_on_other_evaluation_data_is_refused(accepted, gate, tmp_path):
    from tinygate.zoo.digits import eval_set

    data = eval_set()
    np.savez(tmp_path / "other.npz", inputs=data.inputs[:400], labels=data.labels[:400])
    run = gate("-m", "regression and not latency", eval_spec=f'{{ npz = "{tmp_path / "other.npz"}" }}')
    assert run.returncode == 1
    assert "was evaluated on different data" in run.line("per-sample comparison is refused")


def test_a_variant_gone_from_the_config_fails_until_a_baseline_without_it_is_accepted(accepted, gate, tmp_path):
    float_only = VARIANTS.split("[models.digits.variants.onnx_int8_static]")[0]
    gone = gate("-m", "regression and not latency", variants=float_only)
    assert gone.returncode == 1, gone.output[-3000:]
    assert "digits-onnx_int8_static" in gone.line("in the baseline, gone from")
    accept = gate("--gate-accept-baseline", "--reason", "static int8 dropped", variants=float_only)
    assert accept.returncode == 0 and "baseline accepted" in accept.output, accept.output[-3000:]
    assert gate("-m", "regression and not latency", variants=float_only).returncode == 0
    nowhere = gate("-m", "regression and not latency", "--gate-baseline-dir", str(tmp_path / "nowhere"),
                   variants=float_only)
    assert nowhere.returncode == 1 and "regression checks cannot run" in nowhere.line("named by --gate-baseline-dir")


def test_scores_measured_by_another_backend_are_not_paired(accepted, gate):
    doc = json.loads((accepted / "baseline.json").read_text())
    doc["variants"]["digits-float"]["measured_on"] = "Core ML runtime"  # as if measured on a Mac
    (accepted / "baseline.json").write_text(json.dumps(doc))
    run = gate("-m", "regression and not latency", "-k", "quality_vs_baseline")
    assert run.returncode == 0, run.output[-3000:]
    line = run.line("digits-float: refused")
    assert "measured on the Core ML runtime, today's on the torch" in line


def test_small_drops_that_each_pass_add_up_to_a_drift_failure(accepted, gate, tmp_path):
    noisy = _perturbed(tmp_path, 0.6, "noisy.safetensors")
    lenient = "accuracy_drop_pct = 5.0\ndrift_accuracy_pct = 5.0"
    second = gate("--gate-accept-baseline", "--reason", "release 1.1", weights=noisy, regression=lenient)
    assert second.returncode == 0, second.output[-3000:]
    # the float model's outputs moved: accepting is the point, and the record says what was accepted
    checks = json.loads((second.reports / "results.json").read_text())["checks"]
    moved = [c for c in checks if c["check"] == "float_sqnr_vs_baseline.logits"]
    assert moved and moved[0]["note"].startswith("accepted over the old baseline: "), moved
    run = gate("-m", "regression and not latency", weights=noisy, regression="drift_accuracy_pct = 1.0")
    assert run.returncode == 1
    failed = [line for line in run.output.splitlines() if line.startswith("FAILED")]
    assert any("test_quality_drift_vs_release_line_start[digits-float]" in f for f in failed), failed
    assert not any("test_quality_vs_baseline" in f for f in failed), failed  # 1.1 itself is unchanged


PASSES = '''
import torch
from tinygate.zoo.digits import build as digits


class Passes(torch.nn.Module):
    """The digits model run n times and averaged: the same outputs, n times the work."""

    def __init__(self, n):
        super().__init__()
        self.net, self.n = digits(), n

    def forward(self, x):
        out = self.net(x)
        for _ in range(self.n - 1):
            out = out + self.net(x)
        return out / self.n

    def load_state_dict(self, state, strict=True, assign=False):
        return self.net.load_state_dict(state, strict=strict, assign=assign)


def eight():
    return Passes(8)


def eight_again():  # the same model under another name: a new artifact hash, so it is timed
    return Passes(8)


def ten():  # 25% more work than eight
    return Passes(10)
'''

FLOAT_ONLY = """
[models.digits.variants.float]
steps = []
budgets = { min_accuracy_pct = 90 }
"""


@pytest.fixture
def passes_gate(tmp_path, run_gate):
    """A digits float model built by one of PASSES' factories, compared with a baseline built by `eight`."""
    (tmp_path / "passes.py").write_text(PASSES)

    def run(factory: str, *args: str, regression: str = ""):
        text = model_table("digits").replace('"tinygate.zoo.digits:build"', f'"passes:{factory}"') + FLOAT_ONLY
        text = (f"[regression]\n{regression}\n" if regression else "") + text
        (tmp_path / "gate.toml").write_text(text)
        return run_gate(tmp_path / "gate.toml", *args, "-p", "no:logging")

    accepted = run("eight", "--gate-accept-baseline", "--reason", "eight passes")
    assert accepted.returncode == 0, accepted.output[-3000:]
    return run


def test_a_25_percent_slower_candidate_fails_the_latency_regression_check(passes_gate):
    run = passes_gate("ten", "-m", "regression and latency", "-k", "latency_vs_baseline")
    assert run.returncode == 1, run.output[-3000:]
    assert "Wilcoxon" in run.line("digits-float: regressed against the baseline: latency_ratio_vs_baseline")


def test_a_slower_forward_with_the_same_factory_name_and_weights_fails(passes_gate, tmp_path):
    """Only the code changed (the factory module edited in place): the baseline's TorchScript of its own day is
    timed against today's, so the slowdown is seen."""
    path = tmp_path / "passes.py"
    slower = path.read_text().replace("def eight():\n    return Passes(8)", "def eight():\n    return Passes(12)")
    path.write_text(slower)
    run = passes_gate("eight", "-m", "regression and latency", "-k", "latency_vs_baseline")
    assert run.returncode == 1, run.output[-3000:]
    line = run.line("digits-float: regressed against the baseline: latency_ratio_vs_baseline")
    assert "Wilcoxon" in line


def test_a_stored_p50_from_a_quieter_machine_is_unknown_not_a_false_alarm(passes_gate, tmp_path):
    """The stored p50 looks three times faster (recorded on a quiet machine; this one is busier), but timed
    interleaved with the baseline's artifact the candidate is not slower: "unknown: machine busy", no failure."""
    path = tmp_path / "reports/baseline/baseline.json"
    doc = json.loads(path.read_text())
    doc["variants"]["digits-float"]["p50_ms"] /= 3
    path.write_text(json.dumps(doc))
    run = passes_gate("eight_again", "-m", "regression and latency", regression="absolute_floor_ms = 0.01")
    assert run.returncode == 0, run.output[-3000:]
    result = json.loads((run.reports / "results.json").read_text())
    [check] = [c for c in result["checks"] if c["check"] == "latency_p50_vs_baseline"]
    assert check["note"].startswith("unknown: machine busy: p50") and check["verdict"] == "pass", check
    summary = (run.reports / "summary.md").read_text()  # said above the table, not only in a row's note
    assert "- digits-float: latency versus the stored baseline unknown: machine busy" in summary.split("| variant")[0]


def test_an_identical_candidate_timed_against_the_baseline_passes(passes_gate):
    run = passes_gate("eight_again", "-m", "regression and latency", "-k", "latency_vs_baseline")
    assert run.returncode == 0, run.output[-3000:]
    result = json.loads((run.reports / "results.json").read_text())
    [check] = [c for c in result["checks"] if c["check"] == "latency_ratio_vs_baseline"]
    assert "interleaved rounds" in check["note"] and check["passed"]  # timed, not waved through by its hash


@pytest.fixture
def cpu_burner():
    """A process that keeps a core busy for the whole test, as a neighbour on a shared CI machine does."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield proc
    proc.kill()
    proc.wait()


def test_beside_a_cpu_burning_process_no_false_alarm_and_a_25_percent_slower_model_fails(passes_gate, cpu_burner):
    """The baseline was accepted on a quiet machine; both runs here share it with a busy loop. The unchanged
    model passes both latency comparisons (the absolute p50 one says "machine busy" if the load shows), the model
    with 25% more work fails the interleaved one."""
    same = passes_gate("eight_again", "-m", "regression and latency", "-k", "vs_baseline")
    assert same.returncode == 0, same.output[-3000:]
    checks = json.loads((same.reports / "results.json").read_text())["checks"]
    assert {c["check"] for c in checks} >= {"latency_ratio_vs_baseline", "latency_p50_vs_baseline"}
    slower = passes_gate("ten", "-m", "regression and latency", "-k", "vs_baseline")
    assert slower.returncode == 1, slower.output[-3000:]
    assert "Wilcoxon" in slower.line("digits-float: regressed against the baseline: latency_ratio_vs_baseline")
    assert cpu_burner.poll() is None  # it burned throughout


def test_stored_latency_from_another_machine_is_refused(passes_gate, tmp_path):
    path = tmp_path / "reports/baseline/baseline.json"
    doc = json.loads(path.read_text())
    doc["machine"] = {**doc["machine"], "id": "elsewhere000", "cpu_model": "Some Other CPU"}
    path.write_text(json.dumps(doc))
    run = passes_gate("eight", "-m", "regression and latency", "-rs")
    assert run.returncode == 0, run.output[-3000:]
    assert "recorded on machine elsewhere000 (Some Other CPU" in run.line("refused: the baseline's latency")


SHIFT = '''
import torch


class Shift(torch.nn.Module):
    """An image model that adds a learned constant: its PSNR against the input is 20 log10(1 / bias)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.bias


def build():
    return Shift()
'''


def test_a_one_db_psnr_drop_against_the_baseline_fails(tmp_path, run_gate):
    (tmp_path / "shift.py").write_text(SHIFT)
    rng = np.random.default_rng(0)
    images = (0.25 + 0.5 * rng.random((20, 3, 16, 16))).astype(np.float32)
    np.savez(tmp_path / "eval.npz", inputs=images, targets=images)
    config = tmp_path / "gate.toml"

    def gate(bias: float, *args: str):
        save_file({"bias": torch.tensor([bias])}, tmp_path / "shift.safetensors")
        config.write_text("""
[models.shift]
factory = "shift:build"
weights = "shift.safetensors"
task = "image"
input = { name = "image", shape = [1, 3, 16, 16] }
output = { name = "out" }
eval = { npz = "eval.npz" }

[models.shift.variants.float]
steps = []
budgets = { min_psnr_db = 30 }
""")
        return run_gate(config, *args, "-p", "no:logging")

    assert gate(0.01, "--gate-accept-baseline", "--reason", "40 dB").returncode == 0  # 20 log10(1/0.01) = 40 dB
    run = gate(0.01 * 10 ** (1 / 20), "-m", "regression and not latency")  # 39 dB: one dB less on every image
    assert run.returncode == 1, run.output[-3000:]
    line = run.line("shift-float: regressed against the baseline: psnr_change_vs_baseline")
    assert "mean change -1.0000 over 20 paired samples" in line
