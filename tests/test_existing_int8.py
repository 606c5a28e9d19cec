"""A model given already int8 (a QDQ ONNX file from another tool) has no float weights to bound its quantization
error against; the gate reads its own scales instead: each finite and positive, each tensor reaching at least a
quarter of its integer range. A scale made 8x too coarse, a zero scale and a NaN scale each fail, naming the tensor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, quantize_static

from tinygate import Gate

CONFIG = """
[models.q]
onnx = "q.onnx"
task = "fidelity"
input = { name = "x", shape = [1, 3, 8, 8] }
output = { name = "y" }
eval = { npz = "eval.npz" }

[models.q.variants.float]
steps = []
budgets = { max_size_kb = 100 }

[models.q.variants.optimized]
steps = [{ step = "ort_optimize" }]
budgets = { max_size_kb = 100 }
"""


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("q8")
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name) for name, shape in
             [("c1.weight", (8, 3, 3, 3)), ("c1.bias", (8,)), ("c2.weight", (4, 8, 3, 3)), ("c2.bias", (4,))]]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "c1.weight", "c1.bias"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Conv", ["r", "c2.weight", "c2.bias"], ["y"])],
        "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), root / "f.onnx")
    data = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": d[None]} for d in data])

        def get_next(self):
            return next(self.items, None)

    quantize_static(root / "f.onnx", root / "clean.onnx", Reader(), per_channel=True)
    np.savez(root / "eval.npz", inputs=data)
    return root


def _gate(root, edit=None):
    model = onnx.load(str(root / "clean.onnx"))
    if edit:
        edit({t.name: t for t in model.graph.initializer})
    onnx.save(model, str(root / "q.onnx"))
    (root / "gate.toml").write_text(CONFIG)
    return Gate(root / "gate.toml", cache_dir=root / f"cache-{id(edit)}")


def _coarser(inits, factor=8):
    name = next(n for n in inits if n.endswith("weight_quantized"))
    q = numpy_helper.to_array(inits[name])
    inits[name].CopyFrom(numpy_helper.from_array(np.round(q / factor).astype(q.dtype), name))
    return name


def _scale(value):
    def edit(inits):
        name = next(n for n in inits if n.endswith("weight_scale"))
        s = numpy_helper.to_array(inits[name]).copy()
        s[1] = value
        inits[name].CopyFrom(numpy_helper.from_array(s, name))
    return edit


def _check(gate, vid):
    (check,) = [c for c in gate.variant(vid).judge() if c.check == "existing_scales_use_range"]
    return check


@pytest.mark.parametrize("vid", ["q-float", "q-optimized"])
def test_a_clean_int8_model_reaches_its_range(int8_model, vid):
    check = _check(_gate(int8_model), vid)
    assert check.verdict == "pass" and check.value > 0.9, check


def test_a_scale_8x_too_coarse_fails_naming_the_tensor(int8_model):
    named = []
    check = _check(_gate(int8_model, lambda inits: named.append(_coarser(inits))), "q-float")
    assert check.verdict == "fail" and check.value < 0.25, check
    assert named[0] in check.reason and "too coarse" in check.reason


@pytest.mark.parametrize("value", [0.0, float("nan"), -0.1])
def test_a_scale_that_is_not_a_finite_positive_number_fails(int8_model, value):
    check = _check(_gate(int8_model, _scale(value)), "q-float")
    assert check.verdict == "fail" and "not a finite positive number" in check.reason, check


def test_a_dynamic_int8_model_is_read_through_the_scales_its_integer_ops_use(int8_model):
    """MatMulInteger / ConvInteger models (onnxruntime's dynamic int8) apply their scale with a Mul: read by name."""
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(int8_model / "f.onnx", int8_model / "dyn.onnx", per_channel=False)
    (int8_model / "clean.onnx").rename(int8_model / "static.onnx")
    (int8_model / "dyn.onnx").rename(int8_model / "clean.onnx")
    try:
        check = _check(_gate(int8_model), "q-float")
        assert check.verdict == "pass" and check.value > 0.9, check
    finally:
        (int8_model / "static.onnx").rename(int8_model / "clean.onnx")
