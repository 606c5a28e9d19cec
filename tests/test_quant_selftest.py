"""The quantization checks catch what they guard against: a tampered scale or zero point in a shipped
artifact fails the artifact check naming the tensor; a missed quality floor names the layers that lose most."""

from __future__ import annotations

import pytest
from bundled import model_table

pytestmark = pytest.mark.slow

DIGITS = model_table("digits", calibration=True) + """
[models.digits.variants.float]
steps = []
budgets = { min_accuracy_pct = 97 }

[models.digits.variants.onnx_int8]
steps = [{ step = "onnx_export" }, { step = "ort_int8_static", format = "FORMAT" }]
budgets = { min_accuracy_pct = FLOOR }
"""

# A plugin that lets the ort_int8_static step run, then edits one initializer of what it wrote.
TAMPER = """
import onnx
from onnx import numpy_helper
import tinygate.steps.onnx_steps as steps

original = steps.int8_static

def int8_static(src, params, ctx, out):
    path = original(src, params, ctx, out)
    model = onnx.load(str(path))
    for i, init in enumerate(model.graph.initializer):
        if init.name == "features.2.weight_{suffix}":
            value = numpy_helper.to_array(init)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array({edit}, init.name))
    onnx.save(model, str(path))
    return path

steps.int8_static = int8_static
"""


def digits(floor: float, form: str = "qdq") -> str:
    return DIGITS.replace("FLOOR", str(floor)).replace("FORMAT", form)


@pytest.mark.parametrize(("suffix", "edit", "form"), [
    ("scale", "(value * 1.5).astype(value.dtype)", "qdq"),
    ("zero_point", "(value + 1).astype(value.dtype)", "qdq"),
    ("scale", "(value * 1.5).astype(value.dtype)", "qoperator"),  # QLinearConv's own inputs, no DequantizeLinear
], ids=["scale_times_1_5", "zero_point_shifted_by_one", "qoperator_scale_times_1_5"])
def test_a_tampered_quantization_parameter_fails_the_artifact_check_naming_the_tensor(tmp_path, run_gate, suffix,
                                                                                       edit, form):
    (tmp_path / "tamper.py").write_text(TAMPER.format(suffix=suffix, edit=edit))
    (tmp_path / "gate.toml").write_text(digits(90, form))
    run = run_gate(tmp_path / "gate.toml", "-m", "quantization", "-p", "tamper",
                   env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 1, run.output
    assert run.lines("FAILED model_tests/test_quantization.py::test_quantized_weights_within_bound[digits-onnx_int8]")
    # QOperator's bias has no scale of its own: input scale x weight scale, so a tampered weight scale shows there too
    line = run.line("digits-onnx_int8: quantized weight features.2.")
    assert "above its bound" in line and "scale" in line


@pytest.mark.parametrize("form", ["qdq", "qoperator"])
def test_an_untampered_artifact_passes_the_artifact_check(tmp_path, run_gate, form):
    (tmp_path / "gate.toml").write_text(digits(90, form))
    run = run_gate(tmp_path / "gate.toml", "-m", "quantization")
    assert run.returncode == 0, run.output


def test_a_missed_quality_floor_names_the_layers_that_lose_most(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(digits(99.9))
    run = run_gate(tmp_path / "gate.toml", "-k", "accuracy_floor")
    assert run.returncode == 1, run.output
    line = run.line("digits-onnx_int8: accuracy")
    assert "below the floor 99.9 %; worst layer outputs: " in line
    assert " dB" in line.split("worst layer outputs: ")[1]
