"""`tinygate init` on a PyTorch model proposes the Core ML variants that `pytest model_tests -m coreml` selects
(test_gate_any_model shows them written and passing); without coremltools it leaves them out, saying how to get
them, and writes the rest."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.conftest import init_project as _init
from tinygate import artifacts, config, init

CORE_ML = ("coreml", "coreml_int8", "coreml_palettize")


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


def test_a_model_that_flattens_with_view_of_its_size_is_told_why_core_ml_cannot_convert_it(torch_project):
    """coremltools 9.0 with numpy 2.4 fails on int() of a shape (x.view(x.size(0), -1), the common flatten) with
    a bare TypeError about 0-dimensional arrays; the step says what it is and the two ways around it."""
    root = torch_project("viewnet", (
        "import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.conv, self.head = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4 * 8 * 8, 3)\n\n"
        "    def forward(self, x):\n        y = self.conv(x)\n        return self.head(y.view(y.size(0), -1))\n\n\n"
        "def build():\n    return Net()\n"), (1, 8, 8), samples=8)
    text = _init(root, "viewnet")
    if "[models.viewnet.variants.coreml]" in text:
        pytest.skip("this coremltools converts int() of a shape (the bug is fixed)")
    assert re.search(r"^# variant coreml \(.*\) left out: .*only 0-dimensional arrays can be converted to Python "
                     r"scalars: a coremltools [\d.]+ bug with numpy [\d.]+ \(coremltools issues 2633 and 2755\): "
                     r"install numpy<2\.4; most often it is int\(\) of a shape, as in x\.view\(x\.size\(0\), -1\), "
                     r"which torch\.flatten\(x, 1\) avoids$", text, re.M), text
