"""The reference quantizer against the libraries: torch, ONNX Runtime and coremltools, driven by hypothesis.

Where a library legitimately differs, the test names the difference and asserts the bound that still holds.
"""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygate import quant

weights = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
                     elements=st.floats(-1e4, 1e4, width=32, allow_subnormal=False))
per_channel = st.booleans()
signed = st.booleans()


def _params(w: np.ndarray, channel: bool, is_signed: bool) -> quant.QParams:
    return quant.calibrate(w, 8, is_signed, axis=0 if channel and w.ndim > 1 else None)


def _ties(w: np.ndarray, p: quant.QParams) -> np.ndarray:
    """Where w / S lies within a few float32 ulps of a half-integer: there a multiplication by 1/S
    instead of a division decides the side."""
    ratio = w.astype(np.float64) / p._shape(w.ndim, p.scale.astype(np.float64))
    return np.abs(np.abs(ratio - np.floor(ratio)) - 0.5) <= 4 * np.spacing(np.abs(ratio).astype(np.float32))


@given(weights, per_channel, signed)
def test_torch_quantize_agrees_with_the_oracle_except_on_float32_ties(w, channel, is_signed):
    """torch computes Z + rint(w * (1/S)) in float32: one step off at most, and only at a tie.
    Scales below 1/FLT_MAX (ranges under about 1e-36) are outside what torch can compute: 1/S is inf."""
    import torch

    p = _params(w, channel, is_signed)
    assume(np.all(p.scale.astype(np.float64) > 1 / np.finfo(np.float32).max))
    dtype = torch.qint8 if is_signed else torch.quint8
    x = torch.from_numpy(w)
    if p.axis is None:
        q = torch.quantize_per_tensor(x, float(p.scale), int(p.zero_point), dtype)
    else:
        q = torch.quantize_per_channel(x, torch.from_numpy(p.scale.astype(np.float64)),
                                       torch.from_numpy(p.zero_point), p.axis, dtype)
    mine, theirs = quant.quantize(w, p), q.int_repr().numpy().astype(np.int64)
    differ = mine != theirs
    assert np.all(np.abs(mine - theirs) <= 1)
    assert np.all(_ties(w, p)[differ]), f"differs off a tie at {np.argwhere(differ)[:3].tolist()}"


def _ort_qdq(w: np.ndarray, p: quant.QParams, is_signed: bool) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    qtype = TensorProto.INT8 if is_signed else TensorProto.UINT8
    zdtype = np.int8 if is_signed else np.uint8
    attrs = {} if p.axis is None else {"axis": p.axis}
    scale = p.scale.reshape(()) if p.axis is None else p.scale
    zero = p.zero_point.astype(zdtype).reshape(()) if p.axis is None else p.zero_point.astype(zdtype)
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, w.shape)],
        [helper.make_tensor_value_info("q", qtype, w.shape),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, w.shape)],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    q, y = sess.run(None, {"x": w})
    return q.astype(np.int64), y


@given(weights, per_channel, signed)
def test_onnxruntime_quantize_linear_agrees_with_the_oracle_exactly(w, channel, is_signed):
    """One QuantizeLinear -> DequantizeLinear model: the same q everywhere, and the same dequantized
    value up to the float32 product ONNX Runtime computes (S (q - Z) rounded once to float32)."""
    p = _params(w, channel, is_signed)
    q, y = _ort_qdq(w, p, is_signed)
    assert np.array_equal(q, quant.quantize(w, p))
    mine = quant.dequantize(q, p)
    assert np.all(np.abs(y.astype(np.float64) - mine) <= np.spacing(np.abs(mine)))


coreml_weights = hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                            elements=st.floats(-8, 8, width=32, allow_subnormal=False))


@settings(max_examples=30)
@given(coreml_weights, st.sampled_from(["linear", "linear_symmetric"]), st.sampled_from(["per_tensor", "per_channel"]))
@example(w=np.zeros((2, 5), np.float32), mode="linear", granularity="per_tensor")  # coremltools stores S = 0
def test_coreml_linear_weight_quantization_writes_what_the_oracle_computes(tmp_path_factory, w, mode, granularity):
    """coremltools.optimize.coreml writes q, S and Z in a constexpr_affine_dequantize op.

    Differences, named: linear_symmetric uses the restricted signed range [-127, 127] with S = max|w| / 127;
    linear (affine) uses the full int8 range with S = (max - min) / 255 over the range widened to contain 0.
    S is stored rounded to float32 (the oracle rounds it up), so S may differ by a float32 ulp; given
    coremltools' own S and Z, the oracle reproduces its q exactly, and the bound S/2 holds for every
    weight. A weight under 10 elements is left unquantized; an all-zero weight gets S = 0 (after a numpy
    division by zero inside coremltools, whose RuntimeWarning is silenced here) and dequantizes to 0.
    """
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.backend.mil.load import should_use_weight_file

    from tinygate.quant_artifacts import load_mil_program

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, w.shape[1]))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.linear(x=x, weight=w)

    model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS16)
    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode=mode, dtype="int8", granularity=granularity, weight_threshold=0))
    path = tmp_path_factory.mktemp("coreml") / "q.mlpackage"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cto.linear_quantize_weights(model, config).save(str(path))
    ops = [op for op in load_mil_program(path).functions["main"].operations
           if op.op_type == "constexpr_affine_dequantize"]
    if not should_use_weight_file(w):  # named difference: too small for the weight file, left as a const
        assert ops == []
        return
    (op,) = ops
    q_lib = op.quantized_data.val.astype(np.int64)
    s_lib = np.atleast_1d(op.scale.val).astype(np.float32)
    z_lib = np.atleast_1d(op.zero_point.val).astype(np.int64)
    symmetric = mode == "linear_symmetric"
    p = quant.calibrate(w, 8, True, symmetric=symmetric, axis=0 if granularity == "per_channel" else None,
                        restricted=symmetric)
    lib = quant.QParams(s_lib.ravel(), z_lib.ravel(), p.qmin, p.qmax, int(op.axis.val) if s_lib.size > 1 else None)
    # named difference: an all-zero weight or channel gets S = 0 (the oracle uses 1); both dequantize to 0
    live = np.abs(w).max(axis=1) > 0 if s_lib.size > 1 else np.array([np.any(w)])
    assert np.all(quant.dequantize(q_lib, lib)[np.broadcast_to(~live[:, None], w.shape)] == 0)
    z_mine, s_mine = np.broadcast_to(p.zero_point, live.shape), np.broadcast_to(p.scale, live.shape)
    assert np.array_equal(z_lib.ravel()[live], z_mine[live])
    assert np.allclose(s_lib.ravel()[live], s_mine[live], rtol=2**-22, atol=0)
    assert np.all(np.abs(quant.quantize(w, lib) - q_lib) <= 0)  # the oracle reproduces q from coremltools' S, Z
    err = np.abs(quant.dequantize(q_lib, lib).astype(np.float64) - w)
    assert np.all(err <= quant.round_trip_tolerance(w, lib) + 2**-23 * np.abs(w))
