"""ONNX Runtime's x86 int8 kernels without VNNI add u8 x s8 products pairwise in 16 bits and saturate (its
quantization docs); 7-bit weights (reduce_range) cannot. latency.int8_saturates() asks ONNX Runtime, and the web
fidelity check names that cause when it holds and the model has weights past 7 bits."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinygate import latency
from tinygate.pytest_checks.web import _eight_bit_weights

K = 64


def _model(weight: int) -> onnx.ModelProto:
    b = np.full((K, 8), weight, np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, K])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
                              [numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _saturated(weight: int) -> bool:
    import onnxruntime as ort

    session = ort.InferenceSession(_model(weight).SerializeToString(), providers=["CPUExecutionProvider"])
    return bool(np.any(session.run(None, {"a": np.full((4, K), 255, np.uint8)})[0] != K * 255 * weight))


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() != "x86_64", reason="reads /proc/cpuinfo")
def test_onnxruntime_saturates_exactly_on_the_x86_cpus_without_vnni():
    units = latency.vector_units().split()
    without_vnni = "avx2" in units and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(units)
    assert latency.int8_saturates() is without_vnni, latency.vector_units()


def test_seven_bit_weights_are_exact_on_every_cpu():
    assert not _saturated(64)
    assert _saturated(127) is latency.int8_saturates()


@pytest.mark.parametrize("weight, past_seven_bits", [(127, True), (-100, True), (64, False), (-64, False)])
def test_the_web_checks_hint_is_for_int8_weights_past_seven_bits(tmp_path, weight, past_seven_bits):
    onnx.save(_model(weight), tmp_path / "m.onnx")
    assert _eight_bit_weights(tmp_path / "m.onnx") is past_seven_bits
