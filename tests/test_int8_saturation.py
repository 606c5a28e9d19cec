"""ONNX Runtime's x86 int8 kernels without VNNI add u8 x s8 products pairwise in 16 bits and saturate (its
quantization docs); 7-bit weights (reduce_range) cannot. latency.int8_saturates() says which CPU this is: the web
fidelity check's hint and the machine fingerprint rest on it."""

from __future__ import annotations

import numpy as np
import pytest

from tinygate import latency

K = 64


def _matmul_integer(weight: int) -> tuple[np.ndarray, np.ndarray]:
    """ONNX Runtime's MatMulInteger of all-255 activations and all-`weight` int8 weights, and the exact product."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    b = np.full((K, 8), weight, np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, K])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    a = np.full((4, K), 255, np.uint8)
    return session.run(None, {"a": a})[0], a.astype(np.int32) @ b.astype(np.int32)


def test_int8_saturates_says_whether_onnxruntime_saturates_on_this_cpu():
    got, exact = _matmul_integer(127)
    assert (not np.array_equal(got, exact)) == latency.int8_saturates(), (latency.vector_units(), got[0, 0])


def test_seven_bit_weights_are_exact_on_every_cpu():
    got, exact = _matmul_integer(64)
    assert np.array_equal(got, exact)


@pytest.mark.parametrize("machine, units, saturates", [
    ("x86_64", "avx2 fma", True),
    ("x86_64", "avx2 fma avx512f avx512_vnni", False),
    ("x86_64", "avx2 fma avx_vnni", False),
    ("aarch64", "asimddp", False),
])
def test_which_cpus_saturate(monkeypatch, machine, units, saturates):
    monkeypatch.setattr(latency.platform, "machine", lambda: machine)
    monkeypatch.setattr(latency, "vector_units", lambda: units)
    assert latency.int8_saturates() is saturates
