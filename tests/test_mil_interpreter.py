"""The MIL interpreter against torch: a zoo of small networks that together exercise every supported op.

Each network is converted with coremltools (fp32 and fp16 compute precision) and run by the interpreter;
fp32 must match the torch model within 1e-4 of the output range, fp16 within FP16_TOLERANCE of it.
"""

from __future__ import annotations

import platform
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from tinygate.mil import KERNELS, Interpreter, UnsupportedOps

FP32_TOLERANCE = 1e-4  # of the output range
# fp16 stores every intermediate with 11 significant bits; over a handful of ops the error stays under
# a few hundred fp16 ulps of the output range (measured worst over the zoo: see test output on failure).
FP16_TOLERANCE = 2e-2


class Zoo(nn.Module):
    def __init__(self, body) -> None:
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


class Lambda(nn.Module):
    def __init__(self, fn, **modules) -> None:
        super().__init__()
        self.fn = fn
        self.mods = nn.ModuleDict(modules)

    def forward(self, x):
        return self.fn(x, self.mods)


def lam(fn, **modules):
    return Lambda(fn, **modules)


ZOO = {
    "conv_relu_maxpool": (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)), (1, 3, 16, 16)),
    "strided_dilated_grouped_conv": (nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, dilation=2, groups=2, padding=2),
                                                   nn.Conv2d(8, 8, 1)), (1, 4, 17, 15)),
    "conv_transpose": (nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
                                     nn.Tanh()), (1, 4, 8, 8)),
    "linear_sigmoid_softmax": (nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Sigmoid(), nn.Linear(16, 5),
                                             nn.Softmax(dim=-1)), (1, 3, 4, 4)),
    "activations": (lam(lambda x, m: torch.cat([m["prelu"](x), F.leaky_relu(x, 0.1), F.silu(x), F.gelu(x),
                                                torch.clamp(x, -0.5, 0.5), F.elu(x), F.relu6(x * 4),
                                                F.softplus(x)], 1),
                        prelu=nn.PReLU(3, 0.2)), (1, 3, 5, 5)),
    "arithmetic": (lam(lambda x, m: (x * 2 - 1) / (x.abs() + 1) + torch.sqrt(x.abs() + 1) * torch.exp(-x)
                       + torch.log(x.abs() + 1) + torch.maximum(x, x * 0.5) - torch.minimum(x, -x) + x ** 2
                       + torch.rsqrt(x * x + 1)), (1, 2, 3, 4)),
    "reductions": (lam(lambda x, m: torch.cat([x.mean(dim=(2, 3)), x.sum(dim=2).amax(dim=-1, keepdim=False),
                                               x.amin(dim=(2, 3)), x.sum(dim=3).mean(dim=-1),
                                               torch.linalg.vector_norm(x, dim=(2, 3))], 1)), (1, 4, 3, 5)),
    "matmul_transpose": (lam(lambda x, m: torch.matmul(x, x.transpose(-1, -2)).permute(0, 2, 1, 3)), (1, 2, 5, 4)),
    "reshape_squeeze_expand_slice": (lam(lambda x, m: x.reshape(1, 6, 10)[:, 1:5:2, ::3].unsqueeze(1)
                                         .squeeze(0).reshape(1, 2, 2, 2)), (1, 3, 4, 5)),
    "split_concat": (lam(lambda x, m: torch.cat(list(reversed(torch.split(x, [1, 3, 2], dim=1))), dim=1)),
                     (1, 6, 4, 4)),
    "avg_and_global_pool": (lam(lambda x, m: F.avg_pool2d(x, 3, stride=2, padding=1) +
                                F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)), (1, 3, 9, 9)),
    "upsample_nearest_bilinear": (lam(lambda x, m: F.interpolate(x, scale_factor=2, mode="nearest") +
                                      F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) +
                                      F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
                                  (1, 3, 5, 6)),
    "norms": (lam(lambda x, m: m["ln"](m["inorm"](m["bn"](x))), bn=nn.BatchNorm2d(4), inorm=nn.InstanceNorm2d(
        4, affine=True), ln=nn.LayerNorm([6, 7])), (1, 4, 6, 7)),
    "pads": (lam(lambda x, m: F.pad(x, (1, 2, 0, 1), mode="constant", value=0.5) +
                 F.pad(x, (1, 2, 0, 1), mode="reflect") + F.pad(x, (1, 2, 0, 1), mode="replicate")), (1, 2, 5, 6)),
}


def _seeded(body: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model = Zoo(body)
    for p in model.parameters():
        p.data = torch.randn_like(p) * 0.5
    for b in model.buffers():
        if b.dtype.is_floating_point:
            b.data = torch.rand_like(b) + 0.5
    return model.eval()


def convert(model: nn.Module, shape: tuple[int, ...], tmp_path, precision: str = "fp32", target: str = "iOS16"):
    import coremltools as ct

    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=shape)], convert_to="mlprogram",
                             compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                             minimum_deployment_target=getattr(ct.target, target))
        path = tmp_path / f"{precision}.mlpackage"
        mlmodel.save(str(path))
        reference = model(x).numpy()
    return path, x.numpy(), reference


def relative_error(path, x, reference) -> float:
    interpreter = Interpreter(path)
    out = interpreter({interpreter.input_names[0]: x})[interpreter.output_names[0]].astype(np.float64)
    spread = float(reference.max() - reference.min()) or 1.0
    return float(np.abs(out - reference).max() / spread)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(ZOO))
def test_interpreter_matches_torch(name, precision, tmp_path):
    body, shape = ZOO[name]
    path, x, reference = convert(_seeded(body), shape, tmp_path, precision)
    assert relative_error(path, x, reference) <= (FP32_TOLERANCE if precision == "fp32" else FP16_TOLERANCE)


def test_a_float16_program_for_ios15_casts_its_inputs_and_outputs(tmp_path):
    body, shape = ZOO["conv_relu_maxpool"]
    path, x, reference = convert(_seeded(body), shape, tmp_path, "fp16", target="iOS15")
    ops = {op.op_type for op in Interpreter(path).function.operations}
    assert "cast" in ops and relative_error(path, x, reference) <= FP16_TOLERANCE


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("compress", ["linear_int8", "palettize_6bit", "prune_50pct"])
def test_compressed_weights_are_decompressed_like_the_float_weights(compress, target, tmp_path):
    """constexpr weight ops (affine dequantize, look-up table, sparse, and the iOS 18 blockwise forms)."""
    import coremltools.optimize.coreml as cto

    from tinygate.quant_artifacts import load_mil_program

    torch.manual_seed(0)
    model = _seeded(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1)))
    path, x, reference = convert(model, (1, 8, 8, 8), tmp_path, "fp32", target=target)
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    op_config = {"linear_int8": cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0),
                 "palettize_6bit": cto.OpPalettizerConfig(nbits=6, mode="kmeans", weight_threshold=0),
                 "prune_50pct": cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0)}[compress]
    fn = {"linear_int8": cto.linear_quantize_weights, "palettize_6bit": cto.palettize_weights,
          "prune_50pct": cto.prune_weights}[compress]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed = fn(mlmodel, cto.OptimizationConfig(global_config=op_config))
    out_path = tmp_path / "compressed.mlpackage"
    compressed.save(str(out_path))
    constexprs = {op.op_type for op in load_mil_program(out_path).functions["main"].operations
                  if op.op_type.startswith("constexpr_")}
    assert constexprs, "the compression wrote no constexpr op"
    # the reference: the torch model with the weights the package decompresses to
    interpreter = Interpreter(out_path)
    convs = [op for op in interpreter.function.operations if op.op_type == "conv"]
    with torch.no_grad():
        for layer, op in zip([model.body[0], model.body[2]], convs, strict=True):
            dense = np.asarray(interpreter._consts[op.inputs["weight"].name], np.float32)
            layer.weight.copy_(torch.from_numpy(dense))
        reference = model(torch.from_numpy(x)).numpy()
    assert relative_error(out_path, x, reference) <= FP32_TOLERANCE


@settings(max_examples=12, deadline=None)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 2), padding=st.integers(0, 2),
       groups=st.sampled_from([1, 2]), height=st.integers(6, 12), width=st.integers(6, 12))
def test_conv_shapes_and_strides(tmp_path_factory, kernel, stride, dilation, padding, groups, height, width):
    assume((kernel - 1) * dilation + 1 <= min(height, width) + 2 * padding)  # torch itself needs this
    model = _seeded(nn.Conv2d(4, 6, kernel, stride=stride, dilation=dilation, padding=padding, groups=groups))
    path, x, reference = convert(model, (1, 4, height, width), tmp_path_factory.mktemp("conv"))
    assert relative_error(path, x, reference) <= FP32_TOLERANCE


def _compressed_ops(tmp_path) -> set[str]:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    from tinygate.quant_artifacts import load_mil_program

    path, _, _ = convert(_seeded(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1))), (1, 8, 8, 8), tmp_path, "fp32")
    ops = set()
    for i, (fn, op_config) in enumerate([
            (cto.linear_quantize_weights, cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0)),
            (cto.palettize_weights, cto.OpPalettizerConfig(nbits=6, mode="kmeans", weight_threshold=0)),
            (cto.prune_weights, cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0))]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compressed = fn(ct.models.MLModel(str(path), skip_model_load=True),
                            cto.OptimizationConfig(global_config=op_config))
        compressed.save(str(tmp_path / f"c{i}.mlpackage"))
        ops |= {op.op_type for op in load_mil_program(tmp_path / f"c{i}.mlpackage").functions["main"].operations}
    return ops


def test_the_zoo_exercises_every_op_the_issue_lists(tmp_path):
    """The ops the zoo's conversions (fp32, fp16 for iOS 15, compressed) use cover the required list; each is
    converted again here, so the test stands alone (under pytest-xdist the zoo runs on several workers)."""
    ops_seen: set[str] = set()
    for name, (body, shape) in ZOO.items():
        (tmp_path / name).mkdir()
        path, _, _ = convert(_seeded(body), shape, tmp_path / name, "fp32")
        ops_seen |= {op.op_type for op in Interpreter(path).function.operations}
    body, shape = ZOO["conv_relu_maxpool"]
    (tmp_path / "ios15").mkdir()
    path, _, _ = convert(_seeded(body), shape, tmp_path / "ios15", "fp16", target="iOS15")
    ops_seen |= {op.op_type for op in Interpreter(path).function.operations}
    ops_seen |= _compressed_ops(tmp_path)
    required = {"conv", "conv_transpose", "linear", "matmul", "relu", "prelu", "leaky_relu", "sigmoid", "tanh",
                "silu", "gelu", "softmax", "clip", "add", "sub", "mul", "real_div", "reduce_mean", "reduce_sum",
                "reduce_max", "concat", "split", "reshape", "transpose", "squeeze", "expand_dims", "slice_by_index",
                "avg_pool", "max_pool", "upsample_nearest_neighbor", "batch_norm", "instance_norm", "layer_norm",
                "pad", "cast", "constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_sparse_to_dense"}
    bilinear = {"upsample_bilinear", "resize_bilinear"} & ops_seen
    assert bilinear, "no bilinear upsampling op was exercised"
    missing = required - ops_seen
    assert not missing, f"ops never exercised by the zoo: {sorted(missing)}; seen: {sorted(ops_seen)}"
    assert ops_seen - {"const"} <= set(KERNELS) | {op for op in ops_seen if op.startswith("constexpr_")}


def test_a_model_with_unsupported_ops_fails_before_running_listing_every_one(tmp_path):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 8))], opset_version=ct.target.iOS16)
    def prog(x):
        values, _ = mb.topk(x=mb.cumsum(x=x, axis=1), k=3)
        return mb.relu(x=values)

    path = tmp_path / "unsupported.mlpackage"
    ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16).save(str(path))
    with pytest.raises(UnsupportedOps, match=r"does not support op\(s\): cumsum, topk$"):
        Interpreter(path)


@pytest.mark.skipif(platform.system() != "Darwin", reason="MLModel.predict runs only on macOS; this is not macOS")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(ZOO))
def test_interpreter_matches_the_core_ml_runtime(name, precision, tmp_path):
    import coremltools as ct

    body, shape = ZOO[name]
    path, x, _ = convert(_seeded(body), shape, tmp_path, precision)
    runtime = ct.models.MLModel(str(path))
    interpreter = Interpreter(path)
    expected = np.asarray(list(runtime.predict({"x": x}).values())[0], np.float64)
    mine = interpreter({"x": x})[interpreter.output_names[0]].astype(np.float64)
    spread = float(expected.max() - expected.min()) or 1.0
    assert np.abs(mine - expected).max() / spread <= (FP32_TOLERANCE if precision == "fp32" else FP16_TOLERANCE)


def test_an_inference_past_the_time_limit_is_stopped_in_one_line(tmp_path):
    """A hostile package must not stall a gate (or a judge): the interpreter stops between ops once a call runs
    past --gate-max-call-seconds, naming the package and the op."""
    from tinygate.errors import GateError
    from tinygate.safety import max_call_seconds, set_max_call_seconds

    body, shape = ZOO["conv_relu_maxpool"]
    path, x, _ = convert(_seeded(body), shape, tmp_path, "fp32")
    interpreter = Interpreter(path)
    before = max_call_seconds()
    set_max_call_seconds(1e-9)
    try:
        with pytest.raises(GateError, match=r"ran past 1e-09 s and was stopped \(--gate-max-call-seconds\)") as exc:
            interpreter({interpreter.input_names[0]: x})
    finally:
        set_max_call_seconds(before)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("kernel,args", [
    ("reduce_mean", {"axes": [-2, -1], "keep_dims": True}),  # a global average pool
    ("reduce_sum", {"axes": [2, 3]}),
    ("instance_norm", {}),
    ("layer_norm", {"axes": [1, 2, 3]}),
    ("softmax", {"axis": 1}),
])
def test_a_reduction_gives_the_same_bits_whatever_layout_a_convolution_left(kernel, args):
    """Convolutions leave their outputs channels-last (twice as fast); a reduction over H and W of such an array
    would add one float at a time instead of pairwise, an fp16 ulp off in one output in ten after an instance
    norm. The kernels reduce in row-major memory, so the layout cannot change a bit."""
    from tinygate import mil

    x = (np.maximum(np.random.default_rng(0).normal(size=(1, 24, 128, 128)), 0) + 4).astype(np.float32)
    channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not channels_last.flags.c_contiguous
    assert np.array_equal(mil.KERNELS[kernel](x=x, **args), mil.KERNELS[kernel](x=channels_last, **args))


def test_a_scalar_output_stays_a_scalar():
    from tinygate import mil

    assert mil._rows(np.float32(3.0)).shape == ()
    assert mil._dense(np.asarray(np.float32(3.0))).shape == ()
