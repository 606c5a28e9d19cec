"""The ONNX int8 steps choose the faster form of the same quantization and say why: ort_int8_static takes
QOperator only where QDQ is clearly slower, and ort_int8_dynamic says when its ConvInteger is slower than the float
model. Timing is injected (calls that sleep), so the decision rule itself is what is tested."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

import tinygate.steps.onnx_steps as onnx_steps


def sleeper(ms: float):
    return lambda: time.sleep(ms / 1000)


@pytest.fixture
def forms(tmp_path):
    built = {"qdq": tmp_path / "qdq.onnx", "qoperator": tmp_path / "qoperator.onnx"}
    built["qdq"].write_bytes(b"x" * 100)
    built["qoperator"].write_bytes(b"x" * 86)
    return built


@pytest.mark.parametrize(("qdq_ms", "qop_ms", "chosen", "why"), [
    (3.0, 1.5, "qoperator", "QOperator: QDQ takes "),
    (1.5, 3.0, "qdq", "QDQ: QOperator takes "),
    (2.0, 2.0, "qdq", "QDQ: QOperator is not 10% faster"),
], ids=["qdq_slower_takes_qoperator", "qoperator_slower_keeps_qdq", "a_tie_keeps_qdq"])
def test_the_static_step_takes_qoperator_only_where_qdq_is_clearly_slower(forms, monkeypatch, qdq_ms, qop_ms, chosen,
                                                                           why):
    monkeypatch.setattr(onnx_steps, "_callers", lambda paths, ctx: [sleeper(qdq_ms), sleeper(qop_ms)])
    form, reason = onnx_steps._faster_form(forms, ctx=None)
    assert form == chosen
    assert reason.startswith(why) and "14% smaller on disk" in reason


def test_the_dynamic_step_says_when_convinteger_is_slower_than_the_float_model(tmp_path, monkeypatch):
    """A conv model quantized dynamically runs ConvInteger; where that is slower than the float model the step says
    so with the artifact, naming the faster forms, and where it is not, it says nothing."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 6, 6])], [weight])
    src = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    params = {"per_channel": False, "reduce_range": False, "ops": "all"}
    for float_ms, int8_ms, says in [(1.0, 3.0, True), (2.0, 2.0, False)]:
        out = tmp_path / f"{float_ms}-{int8_ms}"
        out.mkdir()
        monkeypatch.setattr(onnx_steps, "_callers", lambda paths, ctx, a=float_ms, b=int8_ms: [sleeper(a), sleeper(b)])
        onnx_steps.int8_dynamic(SimpleNamespace(path=src), params, None, out)
        assert (out / "choice").is_file() == says
        if says:
            assert "x the float model" in (out / "choice").read_text() and "ort_int8_static" in (out / "choice").read_text()
    out = tmp_path / "matmul"
    out.mkdir()
    path = onnx_steps.int8_dynamic(SimpleNamespace(path=src), {**params, "ops": "matmul"}, None, out)
    assert onnx_steps._op_types(path) == {"Conv"}  # convolutions kept in float
