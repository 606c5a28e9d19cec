"""Read quantized weights back from a built artifact, and check each against the float weight it came from.

Readers: ONNX (`<name>_quantized` initializers with `_scale` / `_zero_point`, as onnxruntime.quantization
writes for QDQ, QOperator and dynamic models), Core ML (constexpr_affine_dequantize and constexpr_lut_to_dense ops of
the MIL program), and TorchScript int8 (the packed params of quantized modules).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinygate import quant
from tinygate.artifacts import Artifact

FP16_EPS = 2.0**-11  # half an ulp, relative, of a float16 value
FP16_TINY = 2.0**-25  # half the smallest float16 subnormal: weights below it round to 0 in fp16
FP32_EPS = 2.0**-24


@dataclass
class QuantizedTensor:
    """One quantized weight as the artifact stores it, with what is needed to dequantize it."""

    name: str | None  # the float model's state-dict key it came from (None: to be matched by value)
    stored: str  # its name inside the artifact
    kind: str  # "affine" or "lut"
    dequantized: np.ndarray  # float64, the float model's shape
    params: quant.QParams | None = None
    q: np.ndarray | None = None
    lut: np.ndarray | None = None
    value_eps: float = FP32_EPS  # relative rounding of the weights the quantizer saw (fp16 for Core ML)
    value_abs: float = 0.0  # absolute rounding of those weights near zero (fp16 subnormals)
    scale_eps: float = 0.0  # relative rounding of the stored scale
    scale_abs: float = 0.0  # absolute rounding of the stored scale (a float16 scale can underflow to 0)
    transposed: bool = False  # stored as the float weight's transpose (ONNX Runtime's "_Transposed" Gemm weights)


@dataclass
class TensorCheck:
    name: str
    stored: str
    max_error: float
    bound: float  # the bound at the worst element
    scale: float  # the scale (or LUT spacing) at the worst element
    sqnr_db: float
    where: tuple[int, ...] = field(default_factory=tuple)

    @property
    def within_bound(self) -> bool:
        return self.max_error <= self.bound


def check_tensor(qt: QuantizedTensor, float_weight: np.ndarray) -> TensorCheck:
    """Largest |dequantized - float| against its bound, and the tensor's SQNR.

    Affine: bound = S/2 + value_eps*|w| + (scale_eps*S + scale_abs)*|q - Z| + float32 rounding, everywhere (a
    weight outside the representable range is saturated, which the bound flags). LUT: each weight must
    map to its nearest table entry: bound = distance to the nearest entry + 2*value_eps*(|w| + |entry|).
    """
    w = float_weight.astype(np.float64)
    w = w.T if qt.transposed else w
    if w.shape != qt.dequantized.shape and tuple(d for d in w.shape if d != 1) == \
            tuple(d for d in qt.dequantized.shape if d != 1):  # a Conv1d kept as 2-D by its backend: same layout
        w = w.reshape(qt.dequantized.shape)
    if w.shape != qt.dequantized.shape:
        raise ValueError(f"{qt.stored} has shape {qt.dequantized.shape}, float {qt.name} has {w.shape}")
    err = np.abs(qt.dequantized - w)
    if qt.kind == "affine":
        p = qt.params
        s = p._shape(w.ndim, p.scale.astype(np.float64)) * np.ones_like(w)
        z = p._shape(w.ndim, p.zero_point)
        bound = (quant.round_trip_tolerance(w.astype(np.float32), p) + qt.value_eps * np.abs(w) + qt.value_abs
                 + (qt.scale_eps * s + qt.scale_abs) * np.abs(qt.q - z))
        scale = s
    else:
        lut = np.sort(qt.lut.astype(np.float64).ravel())
        nearest = np.min(np.abs(w[..., None] - lut), axis=-1)
        bound = (nearest + 2 * qt.value_eps * (np.abs(w) + np.abs(qt.dequantized)) + 2 * qt.value_abs
                 + FP32_EPS * np.abs(w))
        gaps = np.diff(lut)
        scale = np.full_like(w, float(np.median(gaps)) if len(gaps) else 0.0)
    slack = err - bound
    worst = np.unravel_index(int(np.argmax(slack)), w.shape)
    return TensorCheck(qt.name, qt.stored, float(err[worst]), float(bound[worst]), float(scale[worst]),
                       quant.sqnr_db(w, qt.dequantized), tuple(int(i) for i in worst))


def check_best(qt: QuantizedTensor, candidates: list[np.ndarray]) -> TensorCheck:
    """The check against the float form this tensor was quantized from: the weight as stored, or with the
    BatchNorm after it folded in (whichever it fits best, by the worst error/bound ratio). Shapes that do not fit
    are an error only when no candidate fits."""
    checks, errors = [], []
    for w in candidates:
        try:
            checks.append(check_tensor(qt, w))
        except ValueError as exc:
            errors.append(exc)
    if not checks:
        raise errors[0]
    return min(checks, key=lambda c: c.max_error / c.bound if c.bound > 0 else float("inf"))


def read(art: Artifact, references: dict[str, list[np.ndarray]]) -> list[QuantizedTensor]:
    """Every quantized weight in the artifact, matched to a float weight: by name, else (a converter that renamed
    the layers it fused, as coremltools does with a BatchNorm) by value, one float weight per tensor."""
    reader = {"onnx": _read_onnx, "mlpackage": _read_coreml, "torchscript": _read_torchscript}.get(art.kind)
    if reader is None:
        raise ValueError(f"{art.kind} artifacts hold no quantized weights")
    unmatched: list[str] = []
    found = reader(art, list(references), unmatched)
    unnamed = [t for t in found if t.name is None]
    if unnamed:
        unmatched += _match_by_value(unnamed, {k: v for k, v in references.items()
                                               if k not in {t.name for t in found}})
    if unmatched:  # a quantized weight that cannot be checked is not silently passed over
        from tinygate.errors import GateError

        raise GateError(art.path, None, f"quantized tensor(s) {', '.join(sorted(unmatched)[:5])}"
                                        f"{' and more' if len(unmatched) > 5 else ''} match no float weight, so "
                                        "their error cannot be checked")
    return found


def _match_by_value(tensors: list[QuantizedTensor], references: dict[str, list[np.ndarray]]) -> list[str]:
    """Name each tensor after the float weight it fits best (lowest worst error/bound), one weight per tensor, as
    stored or transposed (the ONNX exporter folds a Linear's transpose into a new constant, `val_0`, when its
    input has more than two dimensions); returns the stored names no weight of its shape is left for."""
    fits = []
    for i, t in enumerate(tensors):
        for flip in (t.transposed, not t.transposed) if t.dequantized.ndim == 2 else (t.transposed,):
            t.transposed = flip
            for name, candidates in references.items():
                try:
                    c = check_best(t, candidates)
                except ValueError:  # another shape
                    continue
                fits.append((c.max_error / c.bound if c.bound > 0 else float("inf"), i, name, flip))
    done, taken = set(), set()
    for _, i, name, flip in sorted(fits):
        if i not in done and name not in taken:
            tensors[i].name, tensors[i].transposed = name, flip
            done.add(i)
            taken.add(name)
    return [t.stored for i, t in enumerate(tensors) if i not in done]


def _match(stored_base: str, float_names: list[str]) -> str | None:
    if stored_base in float_names:
        return stored_base
    flat = {n.replace(".", "_"): n for n in float_names}
    return flat.get(stored_base)


def _qoperator_axes(graph) -> dict[str, int]:
    """The per-channel axis of each quantized weight, from the op that takes it: QLinearConv's and ConvInteger's output
    channels (0), QLinearMatMul's and MatMulInteger's columns (the last), QGemm's by transB. A square weight's scale
    length alone cannot tell."""
    axes = {}
    for n in graph.node:
        if n.op_type in ("MatMulInteger", "ConvInteger") and len(n.input) > 1:  # dynamic: its weight is input 1
            axes[n.input[1]] = -1 if n.op_type == "MatMulInteger" else 0
        elif n.op_type == "QLinearConv" and len(n.input) > 3:
            axes[n.input[3]] = 0
        elif n.op_type == "QLinearMatMul" and len(n.input) > 3:
            axes[n.input[3]] = 1
        elif n.op_type == "QGemm" and len(n.input) > 3:
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            axes[n.input[3]] = 0 if trans_b else 1
    return axes


def _read_onnx(art: Artifact, float_names: list[str], unmatched: list[str]) -> list[QuantizedTensor]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(art.path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dequantizers = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    # QOperator form: an int32 bias has no scale of its own; it is the input's scale times the weight's
    biases = {n.input[bias]: (n.input[1], n.input[4]) for n in model.graph.node
              for op, bias in (("QLinearConv", 8), ("QGemm", 6)) if n.op_type == op and len(n.input) > bias}
    axes = _qoperator_axes(model.graph)
    out = []
    for name, q in list(inits.items()):
        if not name.endswith("_quantized"):
            continue
        stem = name.removesuffix("_quantized")  # "w" of w_quantized, w_scale, w_zero_point
        base = stem.removesuffix("_Transposed")  # a Gemm weight ONNX Runtime stored transposed
        node = dequantizers.get(name)  # static QDQ names the scale and zero point (a bias: "b_quantized_scale")
        scale_name = node.input[1] if node is not None else f"{stem}_scale"
        zero_name = node.input[2] if node is not None and len(node.input) > 2 else f"{stem}_zero_point"
        float_name = _match(base, float_names)  # None: matched by value (read)
        if scale_name not in inits and name in biases and all(s in inits for s in biases[name]):
            x_scale, w_scale = biases[name]
            inits[scale_name] = (inits[x_scale].astype(np.float32) * inits[w_scale].astype(np.float32))
        if scale_name not in inits:
            unmatched.append(name)
            continue
        axis_attr = next((a.i for a in node.attribute if a.name == "axis"), 1) if node is not None else None
        scale = inits[scale_name].astype(np.float32)
        zero = inits.get(zero_name, np.zeros_like(scale, dtype=q.dtype)).astype(np.int64)
        axis = None
        if scale.size > 1:
            axis = axis_attr
            if axis is None:  # QOperator: the consuming op's output-channel axis; else the dimension of its length
                dims = [d for d, n in enumerate(q.shape) if n == scale.size]
                axis = axes.get(name, dims[0]) % q.ndim
        info = np.iinfo(q.dtype)
        params = quant.QParams(scale.ravel(), zero.ravel(), int(info.min), int(info.max), axis)
        out.append(QuantizedTensor(float_name, name, "affine", quant.dequantize(q, params).astype(np.float64),
                                   params, q.astype(np.int64), transposed=stem != base))
    return out


def read_existing(path: Path) -> list[QuantizedTensor]:
    """The int8 weights of a model that came quantized (no float weights to compare with): each integer initializer
    a DequantizeLinear, QLinearConv, QLinearMatMul or QGemm reads, with the scale and zero point it is read with.
    Int32 biases are left out (their scale is derived)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    uses = []  # (weight, scale, zero point, axis)
    for n in graph.node:
        if n.op_type == "DequantizeLinear":
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            uses.append((n.input[0], n.input[1], n.input[2] if len(n.input) > 2 else "", axis))
        elif n.op_type in ("QLinearConv", "QLinearMatMul", "QGemm") and len(n.input) > 5:
            uses.append((n.input[3], n.input[4], n.input[5], _qoperator_axes(graph).get(n.input[3])))
        elif n.op_type in ("MatMulInteger", "ConvInteger") and len(n.input) > 1:  # dynamic: the scale a Mul applies,
            stem = n.input[1].removesuffix("_quantized")  # named as onnxruntime.quantization names it
            uses.append((n.input[1], f"{stem}_scale", f"{stem}_zero_point", _qoperator_axes(graph).get(n.input[1])))
    out = []
    for w, s, z, axis in uses:
        if w not in inits or s not in inits:
            continue
        q = numpy_helper.to_array(inits[w])
        if q.dtype not in (np.int8, np.uint8, np.int16, np.uint16):
            continue
        scale = numpy_helper.to_array(inits[s]).astype(np.float32).ravel()
        zero = (numpy_helper.to_array(inits[z]).astype(np.int64).ravel() if z in inits
                else np.zeros_like(scale, np.int64))
        axis = (axis % q.ndim if axis is not None else 0) if scale.size > 1 and q.ndim else None
        info = np.iinfo(q.dtype)
        params = quant.QParams(scale, zero, int(info.min), int(info.max), axis)
        out.append(QuantizedTensor(None, w, "affine", np.zeros(0), params, q.astype(np.int64)))
    return out


def range_use(qt: QuantizedTensor) -> tuple[float, int | None]:
    """How much of its integer range a tensor's largest |q - Z| reaches (1: the scale maps the largest weight to
    the end of the range, as int8 quantizers do; 0.5 is one bit unused), per channel, the worst channel and
    where. All-zero channels (pruned) are passed over."""
    p = qt.params
    z = p._shape(qt.q.ndim, p.zero_point) * np.ones_like(qt.q)
    reach = np.maximum(p.qmax - z, z - p.qmin).astype(np.float64)
    dev = np.abs(qt.q - z)
    if p.axis is None:
        return (float(dev.max() / reach.max()) if dev.any() else 1.0), None
    moved = np.moveaxis(dev / reach, p.axis, 0).reshape(dev.shape[p.axis], -1).max(axis=1)
    live = [i for i in range(len(moved)) if np.moveaxis(dev, p.axis, 0)[i].any()]
    if not live:
        return 1.0, None
    worst = min(live, key=lambda i: moved[i])
    return float(moved[worst]), worst


def load_mil_program(path: Path):
    """The MIL program of a saved .mlpackage, with its weights, through coremltools' own loader."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as mil_load

    spec = ct.utils.load_spec(str(path))
    return mil_load(spec, spec.specificationVersion, str(path / "Data" / "com.apple.CoreML" / "weights"))


def _read_coreml(art: Artifact, float_names: list[str], unmatched: list[str]) -> list[QuantizedTensor]:
    out = []
    for op in load_mil_program(art.path).functions["main"].operations:
        if op.op_type not in ("constexpr_affine_dequantize", "constexpr_lut_to_dense"):
            continue
        base = op.name
        for suffix in ("_quantized", "_palettized"):
            base = base.removesuffix(suffix)
        base = base.removesuffix("_to_fp16")
        float_name = _match(base, float_names)  # None: a layer coremltools renamed (a fused BatchNorm)
        val = {k: v.val for k, v in op.inputs.items()}
        if op.op_type == "constexpr_affine_dequantize":
            q = val["quantized_data"]
            scale, zero = np.atleast_1d(val["scale"]), np.atleast_1d(val["zero_point"]).astype(np.int64)
            axis = int(val["axis"]) if scale.size > 1 else None
            info = np.iinfo(q.dtype)
            params = quant.QParams(scale.astype(np.float32).ravel(), zero.ravel(), int(info.min), int(info.max), axis)
            fp16_scale = scale.dtype == np.float16
            out.append(QuantizedTensor(float_name, op.name, "affine",
                                       quant.dequantize(q, params).astype(np.float64), params, q.astype(np.int64),
                                       value_eps=FP16_EPS, value_abs=FP16_TINY, scale_eps=FP16_EPS * fp16_scale,
                                       scale_abs=FP16_TINY * fp16_scale))
        else:
            dense = op.materialized_val_inference()  # coremltools unpacks the bit-packed indices
            out.append(QuantizedTensor(float_name, op.name, "lut", np.asarray(dense, np.float64),
                                       lut=np.asarray(val["lut"]), value_eps=FP16_EPS, value_abs=FP16_TINY))
    return out


def _read_torchscript(art: Artifact, float_names: list[str], unmatched: list[str]) -> list[QuantizedTensor]:
    import torch

    torch.backends.quantized.engine = dict(art.meta)["engine"]
    with warnings.catch_warnings():  # TorchScript is deprecated; see tinygate/steps/torch_int8.py
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(art.path))
    out = []
    for name, sub in module.named_modules():
        if not hasattr(sub, "_packed_params") or sub.original_name == "LinearPackedParams":
            continue
        packed = sub._packed_params
        if not isinstance(packed, torch.ScriptObject):  # Linear keeps it one module down
            packed = packed._packed_params
        if "Linear" in sub.original_name:
            weight, _ = torch.ops.quantized.linear_unpack(packed)
        else:
            weight, _ = torch.ops.quantized.conv2d_unpack(packed)
        float_name = _match(f"{name}.weight", float_names)
        if float_name is None:
            unmatched.append(f"{name}._packed_params")
            continue
        q = weight.int_repr().numpy().astype(np.int64)
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale = weight.q_per_channel_scales().numpy().astype(np.float32)
            zero = weight.q_per_channel_zero_points().numpy().astype(np.int64)
            axis = int(weight.q_per_channel_axis())
        else:
            scale = np.array([weight.q_scale()], np.float32)
            zero, axis = np.array([weight.q_zero_point()], np.int64), None
        info = torch.iinfo(weight.dtype)
        params = quant.QParams(scale, zero, int(info.min), int(info.max), axis)
        out.append(QuantizedTensor(float_name, f"{name}._packed_params", "affine",
                                   quant.dequantize(q, params).astype(np.float64), params, q))
    return out
