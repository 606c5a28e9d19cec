"""The optimization steps a variant chains: what each consumes and produces, and its parameters.

Each step's build function lives in its own module and is imported only when the step runs, so a
gate without coremltools can still validate and run its ONNX and torch variants. A user's own step is a
function decorated with `tinygate.step(...)`, registered by a dotted path under `[steps]` in gate.toml or
by an entry point in the `tinygate.steps` group (tinygate.steps.registry).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The parameters tinygate writes for ONNX Runtime's int8 steps (init, optimize). Its x86 int8 kernels without VNNI
# saturate 16-bit sums of products that other CPUs and the browser compute exactly; with 7-bit weights no sum can
# saturate, so a budget measured on a laptop holds on any CI runner (results then differ by float rounding only).
# The cost: about 0.2 dB of PSNR on the bundled tinybeauty, on every CPU.
ORT_INT8_PARAMS = {"reduce_range": True}

# Artifact kinds, and the backend that runs each.
BACKEND = {"torch": "torch", "torchscript": "torch", "onnx": "onnx", "mlpackage": "coreml"}


@dataclass(frozen=True)
class Param:
    """A step parameter: its type, default, and a range check that returns a problem or None."""

    type: type | tuple[type, ...]
    default: Any
    check: Callable[[Any], str | None] = lambda v: None


def _names(v: Any) -> str | None:
    """Mixed precision: a list of the float model's weight names, kept in float."""
    return None if all(isinstance(n, str) and n for n in v) else f"must be a list of weight names, got {v!r}"


def _between(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = (v > lo if lo_open else v >= lo) and v <= hi
        return None if ok else f"must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}"
    return check


def _one_of(*choices: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(map(str, choices))}; got {v!r}"


@dataclass(frozen=True)
class StepSpec:
    name: str
    consumes: tuple[str, ...]
    produces: str
    module: str  # package.module:function, called as function(artifact, params, context, out_dir) -> path
    params: dict[str, Param] = field(default_factory=dict)
    uses_calibration: bool = False
    user: bool = False  # registered by the user: its module's source is part of every cache key it makes

    def build_fn(self) -> Callable[..., Any]:
        module, func = self.module.split(":")
        return getattr(importlib.import_module(module), func)

    def code_digest(self, project) -> str:
        """The hash of a user step's module source and of the project's own modules it uses: editing the step or a
        helper of it rebuilds what it made."""
        from pathlib import Path

        from tinygate.cache import digest_path, key_of
        from tinygate.pipeline import user_modules

        module = importlib.import_module(self.module.split(":")[0])
        return key_of(files=[digest_path(f) for f in [Path(module.__file__), *user_modules(module, project)]])


def step(*, consumes: str | tuple[str, ...], produces: str, calibration: bool = False, **params: Any):
    """Declare a function as a step: what artifact kind it takes and makes (torch, torchscript, onnx, mlpackage),
    whether it needs the calibration set, and its parameters with their defaults (their types follow).

        @tinygate.step(consumes="torch", produces="torch", scale=0.5)
        def shrink(src, params, ctx, out):  # -> the path of the artifact written under `out`
    """
    consumes = (consumes,) if isinstance(consumes, str) else tuple(consumes)
    for kind in (*consumes, produces):
        if kind not in BACKEND:
            raise ValueError(f"unknown artifact kind {kind!r} (known: {', '.join(BACKEND)})")

    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        declared = {k: Param(float if isinstance(v, float) else type(v), v) for k, v in params.items()}
        fn.tinygate_step = StepSpec(fn.__name__, consumes, produces, f"{fn.__module__}:{fn.__qualname__}", declared,
                                    calibration, user=True)
        return fn
    return declare


STEPS: dict[str, StepSpec] = {s.name: s for s in (
    StepSpec("prune", ("torch",), "torch", "tinygate.steps.prune:prune",
             {"rate": Param(float, 0.3, _between(0.0, 1.0, lo_open=True))}),
    StepSpec("finetune", ("torch",), "torch", "tinygate.steps.finetune:finetune",
             {"steps": Param(int, 300, _between(1, 100_000)),
              "lr": Param(float, 3e-4, _between(0.0, 1.0, lo_open=True)),
              "batch": Param(int, 8, _between(1, 1024)), "seed": Param(int, 0, _between(0, 2**31)),
              "quantize": Param(str, "none", _one_of("none", "int8", "palettize")),
              "nbits": Param(int, 4, _one_of(1, 2, 3, 4, 6, 8)), "crop": Param(int, 0, _between(0, 4096))},
             uses_calibration=True),
    StepSpec("onnx_export", ("torch",), "onnx", "tinygate.steps.onnx_steps:export",
             {"opset": Param(int, 18, _between(13, 23))}),
    StepSpec("ort_optimize", ("onnx",), "onnx", "tinygate.steps.onnx_steps:optimize",
             {"level": Param(str, "basic", _one_of("basic", "extended", "all"))}),
    StepSpec("ort_fp16", ("onnx",), "onnx", "tinygate.steps.onnx_steps:fp16"),
    StepSpec("ort_int8_dynamic", ("onnx",), "onnx", "tinygate.steps.onnx_steps:int8_dynamic",
             {"per_channel": Param(bool, False), "reduce_range": Param(bool, False),
              "ops": Param(str, "all", _one_of("all", "matmul")), "keep_float": Param(list, [], _names)}),
    StepSpec("ort_int8_static", ("onnx",), "onnx", "tinygate.steps.onnx_steps:int8_static",
             {"per_channel": Param(bool, True), "reduce_range": Param(bool, False),
              "format": Param(str, "auto", _one_of("auto", "qdq", "qoperator")),
              "calibration": Param(str, "minmax", _one_of("minmax", "entropy", "percentile")),
              "keep_float": Param(list, [], _names)},
             uses_calibration=True),
    StepSpec("torch_int8", ("torch",), "torchscript", "tinygate.steps.torch_int8:quantize",
             {"backend": Param(str, "x86", _one_of("x86", "fbgemm", "qnnpack"))},
             uses_calibration=True),
    StepSpec("coreml", ("torch",), "mlpackage", "tinygate.steps.coreml_steps:convert",
             {"precision": Param(str, "fp16", _one_of("fp16", "fp32")),
              "target": Param(str, "iOS16", _one_of("iOS15", "iOS16", "iOS17", "iOS18", "macOS13", "macOS14"))}),
    StepSpec("coreml_int8", ("mlpackage",), "mlpackage", "tinygate.steps.coreml_steps:linear_int8",
             {"mode": Param(str, "linear_symmetric", _one_of("linear", "linear_symmetric")),
              "granularity": Param(str, "per_channel", _one_of("per_tensor", "per_channel")),
              "weight_threshold": Param(int, 0, _between(0, 2**31))}),
    StepSpec("coreml_palettize", ("mlpackage",), "mlpackage", "tinygate.steps.coreml_steps:palettize",
             {"nbits": Param(int, 4, _one_of(1, 2, 3, 4, 6, 8)),
              "mode": Param(str, "kmeans", _one_of("kmeans", "uniform")),
              "weight_threshold": Param(int, 0, _between(0, 2**31))}),
)}


ORT_INT8 = ("ort_int8_dynamic", "ort_int8_static")

# Step orders a runtime cannot take, refused when the config is read: step -> (steps it may not follow, why).
CANNOT_FOLLOW: dict[str, tuple[tuple[str, ...], str]] = {
    **{s: (("ort_fp16", *ORT_INT8), "ONNX Runtime's quantizer takes a float32 model (after ort_fp16 it crashes; after "
                                    "another int8 step the model is int8 already): quantize once, from float32")
       for s in ORT_INT8},
    "ort_fp16": (ORT_INT8, "an int8 model's scales would become fp16, which ONNX Runtime refuses"),
    "coreml_int8": (("coreml_int8",), "the weights are int8 already: a second pass changes nothing"),
    "coreml_palettize": (("coreml_int8", "coreml_palettize"), "coremltools leaves weights that are already compressed "
                         "as they are: the palettization would silently do nothing (palettize first, then coreml_int8 "
                         "to quantize the look-up table)"),
}


FP16_MAX = 65504.0  # the largest finite float16


def check_fp16_range(named: dict, what: str) -> None:
    """Refuse weights that leave fp16's range (they would become inf, or be clipped without a word), naming the
    largest one against 65504."""
    import numpy as np

    worst = max(((name, float(np.max(np.abs(np.asarray(v)), initial=0.0))) for name, v in named.items()),
                key=lambda item: item[1], default=("", 0.0))
    if worst[1] > FP16_MAX:
        raise ValueError(f"{what}: weight {worst[0]!r} reaches {worst[1]:.6g}, beyond fp16's largest value "
                         f"{FP16_MAX:g}")
