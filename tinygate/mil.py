"""A reference interpreter for Core ML mlprogram packages, so a Linux gate can see what a Core ML model outputs.

The program is loaded with coremltools' own loader (protobuf and weight blobs) and executed op by op:
numpy for most ops, torch for convolution, pooling and resampling (float32 kernels).

fp16 semantics: every op whose output is typed fp16 (the default compute precision) is computed in
float32 from its (fp16) inputs and its result is rounded to fp16, once per op, as Core ML's fp16 path
stores every intermediate tensor in fp16. Where this can differ from Apple's runtime: the GPU and the
Neural Engine may accumulate long sums (conv, matmul, reductions) in fp16 rather than float32, fuse ops
so that an intermediate is never rounded, and use their own approximations of transcendental functions
(exp, tanh, gelu, sigmoid); the emulation's error against an fp32 reference is therefore a lower bound
of the device's, typically within a few fp16 ulps per op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BACKEND = "MIL interpreter"


class UnsupportedOps(Exception):
    """The program uses ops this interpreter does not implement; raised before anything runs."""


def _attr(op, name: str, default=None):
    var = op.inputs.get(name)
    return default if var is None or getattr(var, "val", None) is None else var.val


def _refused(op) -> str | None:
    """An attribute value an op's kernel here does not compute as Core ML does: refused up front (naming op,
    attribute and value), never computed as something else."""
    kind = op.op_type
    if kind == "upsample_bilinear":
        corners, half = bool(_attr(op, "align_corners", False)), _attr(op, "half_pixel_centers")
        if half is not None and bool(half) == corners:  # torch has half-pixel centers exactly when not aligned
            return f"{kind} half_pixel_centers={bool(half)} with align_corners={corners}"
    if kind == "resize_bilinear":
        mode = str(_attr(op, "sampling_mode", "DEFAULT"))
        if mode not in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "UNALIGN_CORNERS"):
            return f"{kind} sampling_mode={mode}"
    if kind == "gather" and int(_attr(op, "batch_dims", 0)) != 0:
        return f"gather batch_dims={int(_attr(op, 'batch_dims'))}"
    if kind == "conv_transpose" and str(_attr(op, "pad_type", "valid")) not in ("valid", "custom"):
        return f"conv_transpose pad_type={_attr(op, 'pad_type')}"
    return None


class Interpreter:
    """Load an .mlpackage once; call it with {input name: array} to get {output name: array}."""

    def __init__(self, path: Path) -> None:
        from coremltools.converters.mil.mil import types

        from tinygate.quant_artifacts import load_mil_program

        self._types = types
        self.path = path
        self.function = load_mil_program(path).functions["main"]
        unsupported = sorted({op.op_type for op in self.function.operations if op.op_type not in KERNELS
                              and op.op_type != "const" and not op.op_type.startswith("constexpr_")})
        if unsupported:
            raise UnsupportedOps(f"{path}: the MIL interpreter does not support op(s): {', '.join(unsupported)}")
        refused = sorted({problem for op in self.function.operations if (problem := _refused(op))})
        if refused:
            raise UnsupportedOps(f"{path}: the MIL interpreter does not implement {'; '.join(refused)}")
        self.input_names = list(self.function.inputs)
        self.output_names = [v.name for v in self.function.outputs]
        self._consts: dict[str, np.ndarray] = {}
        for op in self.function.operations:  # constants and constexpr weights, decompressed once
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                value = op.outputs[0].val if op.op_type == "const" else op.materialized_val_inference()
                self._consts[op.outputs[0].name] = value

    def _dtype(self, var) -> np.dtype:
        return np.dtype(self._types.nptype_from_builtin(var.dtype))

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; stopped between ops once it runs past the gate's time limit (--gate-max-call-seconds),
        so that a hostile package cannot stall a run."""
        import time

        from tinygate.errors import GateError
        from tinygate.safety import max_call_seconds

        limit, start = max_call_seconds(), time.monotonic()
        env: dict[str, Any] = dict(self._consts)
        for name, var in self.function.inputs.items():
            env[name] = np.asarray(feeds[name]).astype(self._dtype(var))

        for op in self.function.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                continue
            if time.monotonic() - start > limit:
                raise GateError(self.path, op.op_type, f"one inference ran past {limit:g} s and was stopped "
                                                       "(--gate-max-call-seconds)")
            args = {k: _value(v, env) for k, v in op.inputs.items()}
            results = KERNELS[op.op_type](**args)
            results = results if isinstance(results, tuple | list) else (results,)
            for var, result in zip(op.outputs, results, strict=True):
                env[var.name] = _stored(op.op_type, var.name, np.asarray(result), self._dtype(var))
        return {name: np.require(env[name], requirements="C") for name in self.output_names}  # 0-d stays


def _value(var, env: dict[str, Any]):
    """An op input's value: computed earlier in this call, or an inline const (scalar parameters). A function of
    the module, not a closure over `env`: a recursive closure is a reference cycle, which would keep every call's
    intermediate tensors alive until the garbage collector happens to run (gigabytes over an evaluation set)."""
    if isinstance(var, list | tuple):
        return [_value(v, env) for v in var]
    return env[var.name] if var.name in env else var.val


def _stored(op: str, name: str, value: np.ndarray, dtype) -> np.ndarray:
    """An op's output as Core ML stores it: fp16 outputs round here, and one beyond fp16's range is refused
    (the device would hold inf) naming the op, the tensor and its largest magnitude."""
    if dtype == np.float16 and value.dtype.kind == "f":
        if value.size and not (-65504.0 <= value.min() and value.max() <= 65504.0):  # NaN or inf, or too large
            finite = np.abs(value[np.isfinite(value)])
            big = float(finite.max()) if finite.size else 0.0
            if big > 65504.0:
                raise OverflowError(f"Core ML fp16: {op} output {name!r} reaches {big:.6g}, beyond fp16's largest "
                                    "value 65504")
        if value.dtype == np.float32:  # torch's conversion (the same rounding to nearest even) is vectorized
            import torch

            return torch.from_numpy(_dense(value)).half().numpy()
    return value.astype(dtype)


# --- kernels: each takes the op's named inputs (numpy values) and returns its output(s) ---------------

def _f(x: Any) -> np.ndarray:
    """Compute in float32 whatever precision the input is stored in."""
    x = np.asarray(x)
    if x.dtype == np.float16 and x.size > 4096:  # torch converts a large fp16 tensor several times faster
        import torch

        return torch.from_numpy(_dense(x)).float().numpy()
    return x.astype(np.float32) if x.dtype.kind == "f" else x


def _dense(x: np.ndarray) -> np.ndarray:
    """x itself where its memory is dense, row-major or channels-last (the layout a convolution leaves, kept
    so that the next one need not convert back), else a row-major copy: torch takes either as it is."""
    if x.flags.c_contiguous or (x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous):
        return x
    return np.ascontiguousarray(x)


def _rows(x: Any) -> np.ndarray:
    """x in float32 and row-major memory, for a reduction: numpy sums pairwise only along contiguous axes, and a
    channels-last convolution output summed over H and W would add up one float at a time (an fp16 ulp off in
    one output in ten, after an instance norm)."""
    return np.require(_f(x), requirements="C")  # (np.ascontiguousarray makes a 0-d array 1-d)


def _t(x: Any):
    import torch

    return torch.from_numpy(_dense(_f(x)))


def _same_pads(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _pads(x: np.ndarray, kernel: list[int], strides, dilations, pad_type: str, pad) -> list[tuple[int, int]]:
    n = len(kernel)
    strides = list(strides) if strides is not None else [1] * n
    dilations = list(dilations) if dilations is not None else [1] * n
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type in ("same", "same_lower"):
        return [_same_pads(x.shape[2 + i], kernel[i], strides[i], dilations[i], pad_type == "same_lower")
                for i in range(n)]
    pad = [int(p) for p in pad]
    return [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    return [p for pair in reversed(pads) for p in pair]  # torch pads the last dimension first


def conv(x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1):
    import torch
    import torch.nn.functional as F

    kernel = list(weight.shape[2:])
    strides = [1] * len(kernel) if strides is None else [int(s) for s in strides]
    dilations = [1] * len(kernel) if dilations is None else [int(d) for d in dilations]
    pads = _pads(x, kernel, strides, dilations, str(pad_type), pad)
    symmetric = all(a == b for a, b in pads)  # torch pads inside the convolution then: no padded copy
    xt = _t(x) if symmetric else F.pad(_t(x), _torch_pad(pads))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(kernel)]
    if len(kernel) == 2:  # channels-last: oneDNN's direct convolution, about twice as fast here as NCHW
        xt = xt.contiguous(memory_format=torch.channels_last)
    out = fn(xt, _t(weight), None if bias is None else _t(bias), stride=tuple(strides), dilation=tuple(dilations),
             groups=int(groups), padding=tuple(a for a, _ in pads) if symmetric else 0)
    return out.numpy()


def conv_transpose(x, weight, bias=None, pad=None, output_shape=None, pad_type="valid", strides=None,
                   dilations=None, groups=1):
    import torch.nn.functional as F

    n = weight.ndim - 2
    strides = [1] * n if strides is None else [int(s) for s in strides]
    dilations = [1] * n if dilations is None else [int(d) for d in dilations]
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    out = fn(_t(x), _t(weight), None if bias is None else _t(bias), stride=tuple(strides),
             dilation=tuple(dilations), groups=int(groups)).numpy()
    if str(pad_type) == "custom" and pad is not None:
        pads = [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
        out = out[(slice(None), slice(None), *[slice(b, out.shape[2 + i] - a) for i, (b, a) in enumerate(pads)])]
    if output_shape is not None:
        out = out[(slice(None), slice(None), *[slice(0, int(s)) for s in list(output_shape)[2:]])]
    return out


def _pool(kind: str):
    def pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False,
             exclude_padding_from_average=False):
        import torch
        import torch.nn.functional as F

        kernel = [int(k) for k in kernel_sizes]
        strides = [int(s) for s in (strides if strides is not None else kernel)]
        pads = _torch_pad(_pads(x, kernel, strides, None, str(pad_type), pad))
        fn = {"max": F.max_pool2d if len(kernel) == 2 else F.max_pool1d,
              "avg": F.avg_pool2d if len(kernel) == 2 else F.avg_pool1d}[kind]
        if kind == "max":
            xt = F.pad(_t(x), pads, value=-math.inf)
            return fn(xt, kernel, strides, ceil_mode=bool(ceil_mode)).numpy()
        summed = fn(F.pad(_t(x), pads), kernel, strides, ceil_mode=bool(ceil_mode), divisor_override=1) \
            if len(kernel) == 2 else fn(F.pad(_t(x), pads), kernel, strides, ceil_mode=bool(ceil_mode)) * kernel[0]
        if exclude_padding_from_average:
            ones = F.pad(torch.ones_like(_t(x)), pads)
            count = fn(ones, kernel, strides, ceil_mode=bool(ceil_mode), divisor_override=1) if len(kernel) == 2 \
                else fn(ones, kernel, strides, ceil_mode=bool(ceil_mode)) * kernel[0]
        else:
            count = float(np.prod(kernel))
        return (summed / count).numpy()
    return pool


def _reduce(fn: Callable) -> Callable:
    def reduce(x, axes=None, keep_dims=False):
        axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
        return fn(_rows(x), axis=axes, keepdims=bool(keep_dims))
    return reduce


def _unary(fn: Callable) -> Callable:
    return lambda x: fn(_f(x))


def _binary(fn: Callable) -> Callable:
    return lambda x, y: fn(_f(x), _f(y))


def _erf(x: np.ndarray) -> np.ndarray:
    import torch

    return torch.special.erf(_t(x)).numpy()


def gelu(x, mode="EXACT"):
    x = _f(x)
    if str(mode) == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    if str(mode) == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def softmax(x, axis=-1):
    x = _rows(x)
    e = np.exp(x - x.max(axis=int(axis), keepdims=True))
    return e / e.sum(axis=int(axis), keepdims=True)


def _channel(v, ndim: int) -> np.ndarray:
    return _f(v).reshape([1, -1] + [1] * (ndim - 2))


def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = _f(x)
    out = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(variance, x.ndim) + float(epsilon))
    if gamma is not None:
        out = out * _channel(gamma, x.ndim)
    return out + _channel(beta, x.ndim) if beta is not None else out


def instance_norm(x, gamma=None, beta=None, epsilon=1e-5):
    x = _rows(x)
    axes = tuple(range(2, x.ndim))
    out = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + float(epsilon))
    if gamma is not None:
        out = out * _channel(gamma, x.ndim)
    return out + _channel(beta, x.ndim) if beta is not None else out


def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    """Normalized over `axes` (any of them, not only the last); gamma and beta have the shape of those axes."""
    x = _rows(x)
    axes = tuple(sorted(int(a) % x.ndim for a in np.atleast_1d(axes))) if axes is not None else tuple(range(x.ndim))
    out = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + float(epsilon))
    shape = [x.shape[d] if d in axes else 1 for d in range(x.ndim)]
    if gamma is not None:
        out = out * _f(gamma).reshape(shape)
    return out + _f(beta).reshape(shape) if beta is not None else out


def pad(x, pad, mode="constant", constant_val=0.0):
    x = _f(x)
    pad = [int(p) for p in pad]
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = str(mode)
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=float(constant_val))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    n = len(begin)
    stride = list(stride) if stride is not None else [1] * n
    begin_mask = list(begin_mask) if begin_mask is not None else [False] * n
    end_mask = list(end_mask) if end_mask is not None else [False] * n
    squeeze_mask = list(squeeze_mask) if squeeze_mask is not None else [False] * n
    index = []
    for i in range(n):
        if squeeze_mask[i]:
            index.append(int(begin[i]))
            continue
        b = None if begin_mask[i] else int(begin[i])
        e = None if end_mask[i] else int(end[i])
        index.append(slice(b, e, int(stride[i])))
    return x[tuple(index)]


def slice_by_size(x, begin, size):
    x = np.asarray(x)
    return x[tuple(slice(int(b), None if int(s) == -1 else int(b) + int(s)) for b, s in zip(begin, size, strict=True))]


def split(x, axis, num_splits=None, split_sizes=None):
    x = np.asarray(x)
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum([int(s) for s in split_sizes])[:-1], axis=int(axis)))
    return tuple(np.split(x, int(num_splits), axis=int(axis)))


def concat(values, axis, interleave=False):
    if interleave:
        stacked = np.stack([np.asarray(v) for v in values], axis=int(axis) + 1)
        shape = list(np.asarray(values[0]).shape)
        shape[int(axis)] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate([np.asarray(v) for v in values], axis=int(axis))


def _resample(mode: str):
    def resample(x, scale_factor_height=1, scale_factor_width=1, align_corners=False, half_pixel_centers=None,
                 target_size_height=None, target_size_width=None, sampling_mode=None):
        import torch.nn.functional as F

        if target_size_height is not None:
            size = (int(target_size_height), int(target_size_width))
            corners = str(sampling_mode) == "STRICT_ALIGN_CORNERS" or str(sampling_mode) == "ALIGN_CORNERS"
            kwargs = {"size": size}
        else:
            kwargs = {"scale_factor": (float(scale_factor_height), float(scale_factor_width))}
            corners = bool(align_corners)
        if mode == "nearest":
            return F.interpolate(_t(x), mode="nearest", **kwargs).numpy()
        return F.interpolate(_t(x), mode="bilinear", align_corners=corners, **kwargs).numpy()
    return resample


def crop(x, crop_height, crop_width):
    """Remove [top, bottom] rows and [left, right] columns (what the converter emits for padded conv_transpose)."""
    (top, bottom), (left, right) = [int(v) for v in crop_height], [int(v) for v in crop_width]
    return np.asarray(x)[..., top: x.shape[-2] - bottom, left: x.shape[-1] - right]


def matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = _f(x), _f(y)
    x = np.swapaxes(x, -1, -2) if transpose_x else x
    y = np.swapaxes(y, -1, -2) if transpose_y else y
    return np.matmul(x, y)


def linear(x, weight, bias=None):
    out = _f(x) @ _f(weight).T
    return out + _f(bias) if bias is not None else out


def prelu(x, alpha):
    x = _f(x)
    return np.where(x >= 0, x, x * _channel(alpha, x.ndim))


NP_DTYPES = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16, "int8": np.int8,
             "uint8": np.uint8, "bool": np.bool_}

KERNELS: dict[str, Callable[..., Any]] = {
    "conv": conv,
    "conv_transpose": conv_transpose,
    "linear": linear,
    "matmul": matmul,
    "relu": _unary(lambda x: np.maximum(x, 0)),
    "relu6": _unary(lambda x: np.clip(x, 0, 6)),
    "prelu": prelu,
    "leaky_relu": lambda x, alpha=0.01: np.where(_f(x) >= 0, _f(x), _f(x) * float(alpha)),
    "elu": lambda x, alpha=1.0: np.where(_f(x) > 0, _f(x), float(alpha) * (np.exp(_f(x)) - 1)),
    "sigmoid": _unary(lambda x: 1 / (1 + np.exp(-x))),
    "sigmoid_hard": lambda x, alpha=0.2, beta=0.5: np.clip(float(alpha) * _f(x) + float(beta), 0, 1),
    "tanh": _unary(np.tanh),
    "silu": _unary(lambda x: x / (1 + np.exp(-x))),
    "softplus": _unary(lambda x: np.logaddexp(0, x)),
    "gelu": gelu,
    "softmax": softmax,
    "clip": lambda x, alpha, beta: np.clip(_f(x), float(alpha), float(beta)),
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(np.divide),
    "floor_div": _binary(np.floor_divide),
    "pow": _binary(np.power),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "mod": _binary(np.mod),
    "equal": _binary(np.equal),
    "not_equal": _binary(np.not_equal),
    "less": _binary(np.less),
    "less_equal": _binary(np.less_equal),
    "greater": _binary(np.greater),
    "greater_equal": _binary(np.greater_equal),
    "logical_and": _binary(np.logical_and),
    "logical_or": _binary(np.logical_or),
    "logical_not": _unary(np.logical_not),
    "abs": _unary(np.abs),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "log": lambda x, epsilon=1e-45: np.log(_f(x) + float(epsilon)),
    "sqrt": _unary(np.sqrt),
    "rsqrt": lambda x, epsilon=1e-12: 1 / np.sqrt(_f(x) + float(epsilon)),
    "inverse": lambda x, epsilon=1e-4: 1 / (_f(x) + float(epsilon)),
    "square": _unary(np.square),
    "floor": _unary(np.floor),
    "ceil": _unary(np.ceil),
    "round": _unary(np.rint),
    "sign": _unary(np.sign),
    "sin": _unary(np.sin),
    "cos": _unary(np.cos),
    "erf": _unary(_erf),
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "reduce_sum_square": _reduce(lambda x, **k: np.sum(x * x, **k)),
    "reduce_l2_norm": _reduce(lambda x, **k: np.sqrt(np.sum(x * x, **k))),
    "reduce_l1_norm": _reduce(lambda x, **k: np.sum(np.abs(x), **k)),
    "reduce_log_sum_exp": _reduce(lambda x, **k: np.log(np.sum(np.exp(x), **k))),
    "reduce_argmax": lambda x, axis=-1, keep_dims=False: np.argmax(_f(x), axis=int(axis), keepdims=bool(keep_dims)),
    "concat": concat,
    "crop": crop,
    "split": split,
    "reshape": lambda x, shape: np.reshape(x, [int(s) for s in shape]),
    "transpose": lambda x, perm: np.transpose(x, [int(p) for p in perm]),
    "squeeze": lambda x, axes=None: np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in axes)),
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(int(a) for a in axes)),
    "slice_by_index": slice_by_index,
    "slice_by_size": slice_by_size,
    "gather": lambda x, indices, axis=0, batch_dims=0, validate_indices=False: np.take(
        x, np.asarray(indices).astype(np.int64), axis=int(axis)),
    "tile": lambda x, reps: np.tile(x, [int(r) for r in reps]),
    "shape": lambda x: np.asarray(np.shape(x), np.int32),
    "identity": lambda x: x,
    "max_pool": _pool("max"),
    "avg_pool": _pool("avg"),
    "upsample_nearest_neighbor": _resample("nearest"),
    "resize_nearest_neighbor": _resample("nearest"),
    "upsample_bilinear": _resample("bilinear"),
    "resize_bilinear": _resample("bilinear"),
    "batch_norm": batch_norm,
    "instance_norm": instance_norm,
    "layer_norm": layer_norm,
    "pad": pad,
    "cast": lambda x, dtype: np.asarray(x).astype(NP_DTYPES[str(dtype)]),
}
