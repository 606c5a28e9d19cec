"""The ONNX int8 steps choose the faster form of the same quantization and say why: ort_int8_static takes
QOperator only where QDQ is clearly slower (timing injected: calls that sleep, so the decision rule itself is
tested), and a dynamic int8 model whose convolutions run as ConvInteger is said to be why it is slow."""

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
    (1.5, 3.0, "qdq", "QDQ: QDQ takes 0."),
    (2.0, 2.0, "qdq", "QDQ: QDQ takes "),
], ids=["qdq_slower_takes_qoperator", "qoperator_slower_keeps_qdq", "a_tie_keeps_qdq"])
def test_the_static_step_takes_qoperator_only_where_qdq_is_clearly_slower(forms, monkeypatch, qdq_ms, qop_ms, chosen,
                                                                           why):
    monkeypatch.setattr(onnx_steps, "_callers", lambda paths, ctx: [sleeper(qdq_ms), sleeper(qop_ms)])
    form, reason = onnx_steps._faster_form(forms, ctx=None)
    assert form == chosen
    assert reason.startswith(why) and "14% smaller on disk" in reason
    assert ("not 10% faster" in reason) == (chosen == "qdq")


def test_a_convinteger_model_is_said_to_be_slow_and_why_and_ops_matmul_keeps_convolutions_float(tmp_path):
    """Dynamic int8 of a conv model runs ConvInteger: why_slow names it and the faster forms (test_speedup adds it to
    its "slower than float" note); with ops = "matmul" the convolutions stay float and nothing is said."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 6, 6])], [weight])
    src = tmp_path / "float.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    params = {"per_channel": False, "reduce_range": False, "ops": "all", "keep_float": []}
    for ops, says in [("all", True), ("matmul", False)]:
        out = tmp_path / ops
        out.mkdir()
        path = onnx_steps.int8_dynamic(SimpleNamespace(path=src), {**params, "ops": ops}, None, out)
        assert (onnx_steps.why_slow(path) is not None) == says
        assert ("ConvInteger" in onnx_steps._op_types(path)) == says
    assert "ort_int8_static" in onnx_steps.why_slow(tmp_path / "all" / "model.onnx")
    assert onnx_steps.why_slow(src) is None


def test_a_square_qoperator_matmul_weight_is_read_on_its_output_channel_axis(tmp_path):
    """A per-channel QLinearMatMul (or dynamic MatMulInteger) weight of 8x8 has 8 scales along its columns: read
    along the rows (the first dimension of that length), its error would be hundreds of times its bound."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static

    from tinygate import quant_artifacts
    from tinygate.artifacts import Artifact

    rng = np.random.default_rng(0)
    weight = (rng.normal(size=(8, 8)) * np.logspace(-2, 1, 8)).astype(np.float32)  # columns of very different ranges
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(weight, "w")])
    src, out = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": rng.normal(size=(1, 8)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(src, out, Reader(), quant_format=QuantFormat.QOperator, per_channel=True)
    dynamic = tmp_path / "dynamic.onnx"  # dynamic per channel: MatMulInteger, its weight per column as well
    quantize_dynamic(src, dynamic, per_channel=True)
    for path, op in [(out, "QLinearMatMul"), (dynamic, "MatMulInteger")]:
        assert op in onnx_steps._op_types(path)
        (tensor,) = quant_artifacts.read(Artifact("onnx", path, "x", ""), {"w": [weight]})
        assert tensor.params.axis == 1, op
        assert quant_artifacts.check_tensor(tensor, weight).within_bound, op


def test_a_linear_weight_the_exporter_renamed_and_transposed_is_matched_by_value_and_checked(tmp_path):
    """torch.onnx exports a Linear on a 3-D input as MatMul with the weight's transpose folded into a new constant
    (`val_0`): the quantized tensor is matched to the float weight by value, transposed, and still checked against
    it; a weight that no longer fits the float model's fails the bound."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import quantize_dynamic

    from tinygate import quant_artifacts
    from tinygate.artifacts import Artifact

    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(6, 12)).astype(np.float32), rng.normal(size=(1, 6)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "val_0"], ["h"]),
                               helper.make_node("MatMul", ["h", "val_2"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 12])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 1])],
                              [numpy_helper.from_array(first.T.copy(), "val_0"),
                               numpy_helper.from_array(second.T.copy(), "val_2")])
    src, path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    quantize_dynamic(src, path)
    references = {"0.weight": [first], "2.weight": [second]}
    tensors = {t.name: t for t in quant_artifacts.read(Artifact("onnx", path, "x", ""), references)}
    assert set(tensors) == {"0.weight", "2.weight"} and tensors["0.weight"].transposed  # (12, 6) stored for (6, 12)
    assert all(quant_artifacts.check_tensor(tensors[n], references[n][0]).within_bound for n in tensors)
    moved = first + 0.05 * np.abs(first).max()  # the float model changed under the artifact
    assert not quant_artifacts.check_tensor(tensors["0.weight"], moved).within_bound
