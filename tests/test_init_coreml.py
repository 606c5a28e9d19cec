"""`tinygate init` on a PyTorch model proposes the Core ML variants that `pytest model_tests -m coreml` selects
(test_gate_any_model shows them written and passing); without coremltools it leaves them out, saying how to get
them, and writes the rest."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tinygate import artifacts, cli, config, init

CORE_ML = ("coreml", "coreml_int8", "coreml_palettize")


def _init(root) -> str:
    assert cli.main(["init", str(root / "mlp.safetensors"), "--factory", "mlp:build", "--data", str(root / "eval.npz"),
                     "--config", str(root / "gate.toml"), "--cache-dir", str(root / "cache")]) == 0
    return (root / "gate.toml").read_text()


def test_without_coremltools_the_core_ml_variants_are_left_out_saying_how_to_get_them(mlp_project, monkeypatch):
    root = mlp_project(8, 16, 4, samples=16)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "coremltools" else find_spec(name, *rest))
    text = _init(root)
    for name in CORE_ML:
        assert f"[models.mlp.variants.{name}]" not in text
        assert re.search(rf"^# variant {name} \(\[\{{ step = \"coreml\" \}}.*\) left out: coremltools is not "
                         r"installed: pip install 'tinygate\[coreml\]', remove this model's entry and run tinygate "
                         r"init again$", text, re.M), text
    assert "[models.mlp.variants.onnx]" in text


def test_core_ml_figures_say_they_come_from_the_interpreter_and_no_min_speedup_is_written(mlp_project,
                                                                                         monkeypatch):
    """Off macOS the figures are the MIL interpreter's (a lower bound of a device's error), and Core ML is timed
    on macOS only: a min_speedup written there would fail this config's CI on Linux."""
    root = mlp_project(8, 16, 4, samples=16)
    budgets = init._budgets  # as if every variant had been timed (Core ML is, on macOS): min_speedup 1.5
    monkeypatch.setattr(init, "_budgets", lambda figures, *rest: {
        **budgets(figures, *rest), **({"min_speedup": 1.5} if "sqnr_db" in figures else {})})  # not the float
    text = _init(root)
    variants = config.load(root / "gate.toml").models["mlp"].variants
    assert variants["onnx"].budgets.get("min_speedup") == 1.5
    for name in CORE_ML:
        assert "min_speedup" not in variants[name].budgets
        if artifacts.coreml_backend() == artifacts.MIL_INTERPRETER:
            assert re.search(rf"\[models.mlp.variants.{name}\]\n# measured \(on the MIL interpreter: a device's "
                             r"error can be larger\): size_kb", text), text


def test_a_package_the_interpreter_cannot_run_is_left_out_as_not_judged_off_macos(mlp_project, monkeypatch):
    """The conversion worked; only this machine cannot run the package: not "it failed on this model"."""
    from tinygate import mil

    if artifacts.coreml_backend() != artifacts.MIL_INTERPRETER:
        pytest.skip("on macOS, Core ML runs the package itself")
    def refuse(self, path):
        raise mil.UnsupportedOps(f"{path}: the MIL interpreter does not support op(s): linear")
    monkeypatch.setattr(mil.Interpreter, "__init__", refuse)
    text = _init(mlp_project(8, 16, 4, samples=16))
    for name in CORE_ML:
        assert re.search(rf"^# variant {name} .* left out: it cannot be judged off macOS: GateError: .*the MIL "
                         r"interpreter does not support op\(s\): linear$", text, re.M), text
