"""A model without labels has a regression guard too: the float model's outputs are paired with the baseline
float model's, input by input, and each variant's per-input fidelity with the baseline's. Injected: 5% weight
noise and one zeroed convolution in a two-output label-free model (both fail), a variant whose fidelity drops
(fails), and a clean re-run (passes)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.user_code import TWO_HEAD_NET

pytestmark = pytest.mark.slow

CONFIG = '''
[models.faces]
factory = "labelfree_detector:build"
weights = "detector.safetensors"
task = "fidelity"
input = { name = "image", shape = [1, 1, 12, 12] }
output = { names = ["score", "embedding"] }
eval = { npz = "eval.npz" }

[models.faces.variants.float]
steps = []
budgets = { max_size_kb = 100 }

[models.faces.variants.compact]
steps = STEPS
budgets = { max_size_kb = 100, min_output_cosine = 0.5 }
'''
FP16 = '[{ step = "onnx_export" }, { step = "ort_fp16" }]'
INT8 = '[{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    (tmp_path / "labelfree_detector.py").write_text(TWO_HEAD_NET)
    torch.manual_seed(0)
    ns: dict = {}
    exec(TWO_HEAD_NET, ns)  # the same module the gate imports, built here for its first weights
    save_file(ns["build"]().state_dict(), tmp_path / "detector.safetensors")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "eval.npz", inputs=rng.random((24, 1, 12, 12), dtype=np.float32))
    (tmp_path / "gate.toml").write_text(CONFIG.replace("STEPS", FP16))
    return tmp_path


def _weights(project: Path, change) -> None:
    from safetensors.numpy import load_file, save_file

    weights = load_file(project / "clean.safetensors")
    save_file({k: change(k, v) for k, v in weights.items()}, project / "detector.safetensors")


def test_weight_noise_and_a_zeroed_layer_fail_a_label_free_model_and_a_clean_rerun_passes(project, run_gate):
    config = project / "gate.toml"
    accepted = run_gate(config, "--gate-accept-baseline", "--reason", "first release", "-m", "not latency")
    assert accepted.returncode == 0 and "baseline accepted" in accepted.output, accepted.output[-3000:]
    (project / "clean.safetensors").write_bytes((project / "detector.safetensors").read_bytes())
    rng = np.random.default_rng(1)

    _weights(project, lambda k, w: w + rng.normal(0, 0.05 * w.std(), w.shape).astype(w.dtype))  # 5% noise
    noisy = run_gate(config, "-m", "regression and not latency")
    assert noisy.returncode == 1, noisy.output[-3000:]
    line = noisy.line("faces-float: regressed against the baseline: the float model's outputs moved away")
    assert re.search(r"output '(score|embedding)': \d+ of 24 inputs under 60 dB", line), line

    _weights(project, lambda k, w: np.zeros_like(w) if k == "trunk.2.weight" else w)  # one convolution zeroed
    zeroed = run_gate(config, "-m", "regression and not latency")
    assert zeroed.returncode == 1, zeroed.output[-3000:]
    assert zeroed.lines("FAILED model_tests/test_regression.py::test_float_outputs_vs_baseline[faces-float]")

    _weights(project, lambda k, w: w)  # the clean weights again
    clean = run_gate(config, "-m", "regression and not latency")
    assert clean.returncode == 0, clean.output[-3000:]
    assert clean.lines("float_sqnr_vs_baseline") and clean.lines("fidelity_change_vs_baseline.score")


def test_a_variant_whose_fidelity_drops_fails_against_the_baseline(project, run_gate):
    config = project / "gate.toml"
    accepted = run_gate(config, "--gate-accept-baseline", "--reason", "fp16 release", "-m", "not latency")
    assert accepted.returncode == 0, accepted.output[-3000:]
    config.write_text(CONFIG.replace("STEPS", INT8))  # same variant name, a lossier recipe
    worse = run_gate(config, "-m", "regression and not latency")
    assert worse.returncode == 1, worse.output[-3000:]
    line = worse.line("faces-compact: regressed against the baseline: output SQNR vs the float model")
    assert re.search(r"output '(score|embedding)': mean change -[\d.]+ dB over 24 paired inputs", line), line
    assert not worse.lines("FAILED model_tests/test_regression.py::test_float_outputs_vs_baseline")


def test_a_web_variants_fidelity_is_paired_with_its_baseline_measured_in_the_browser(project, run_gate):
    """The browser's per-input fidelity is paired with the baseline's, measured in the browser too (until
    2026-12-06 every run refused it as measured on another backend, so a web variant had no fidelity guard)."""
    config = project / "gate.toml"
    config.write_text(config.read_text().replace("[models.faces.variants.compact]\n",
                                                 '[models.faces.variants.compact]\nruntime = "web"\n'))
    accepted = run_gate(config, "--gate-accept-baseline", "--reason", "first release", "-m", "not latency")
    assert accepted.returncode == 0, accepted.output[-3000:]
    again = run_gate(config, "-m", "regression and not latency", "-k", "fidelity_vs_baseline", "-rA")
    assert again.returncode == 0, again.output[-3000:]
    assert again.lines("PASSED model_tests/test_regression.py::test_fidelity_vs_baseline[faces-compact]"), \
        again.output[-3000:]
