"""ONNX steps: export with torch.onnx, graph optimization and int8 quantization with ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from tinygate.artifacts import Artifact, load_torch
from tinygate.errors import GateError


def export(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """torch.onnx.export through the dynamo exporter (the TorchScript one is deprecated), one file.

    The exporter annotates every node with Python stack traces and keeps intermediate value_info;
    neither is needed to run the model, and on a tiny model they add a fifth to its size, so they
    are stripped before saving.
    """
    import onnx
    import torch

    model = load_torch(src)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        program = torch.onnx.export(model, tuple(torch.from_numpy(x) for x in ctx.example_inputs()), dynamo=True,
                                    input_names=list(ctx.model.input_names), output_names=list(ctx.model.output_names),
                                    opset_version=params["opset"], verbose=False)
    proto = program.model_proto
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.value_info[:]
    onnx.checker.check_model(proto, full_check=True)
    path = out / "model.onnx"
    onnx.save_model(proto, str(path))
    return path


def optimize(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """ONNX Runtime's graph optimizations (constant folding, fusions), saved to a file."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[params["level"]]
    path = out / "model.onnx"
    opts.optimized_model_filepath = str(path)
    source = _self_contained(src.path, out)  # else the result would point at the source's external data
    ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
    if source != src.path:
        source.unlink()
    return path


def _self_contained(path: Path, out: Path) -> Path:
    """The model itself if it has no external data, else a copy in `out` with its weights inline (under the
    2 GB protobuf limit) or in one data file beside it, so every artifact the cache holds stands alone."""
    import onnx

    from tinygate.safety import onnx_files

    if onnx_files(path) == [path]:
        return path
    model = onnx.load(str(path))
    copy = out / "source.onnx"
    large = model.ByteSize() > 1 << 30
    onnx.save_model(model, str(copy), save_as_external_data=large, location="source.onnx.data")
    return copy


def fp16(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Weights and arithmetic in float16 with ONNX Runtime's own converter (onnxruntime.transformers.float16);
    inputs and outputs stay float32 (keep_io_types), so the model is a drop-in replacement."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    from tinygate.steps import check_fp16_range

    refuse_quantized(src, "ort_fp16")
    source = onnx.load(str(src.path))
    check_fp16_range({t.name: numpy_helper.to_array(t) for t in source.graph.initializer if t.data_type == 1},
                     "ort_fp16")
    model = OnnxModel(convert_float_to_float16(source, keep_io_types=True))
    model.topological_sort()  # the converter appends the input casts after their consumers
    path = out / "model.onnx"
    onnx.save_model(model.model, str(path))
    return path


QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
                 "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "QGemm"}


def quantized_form(path: Path) -> str | None:
    """What makes an ONNX model int8 already ("DequantizeLinear nodes", "int8 initializers (w, ...)"), or None."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found = sorted({n.op_type for n in graph.node if n.op_type in QUANTIZED_OPS})
    int8 = [t.name for t in graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    if found or int8:
        return f"{', '.join(found)} nodes" if found else f"int8 initializers ({', '.join(int8[:3])})"
    return None


def refuse_quantized(src: Artifact, step: str) -> None:
    """A model that is already int8 is not quantized again (the result would be the same model, or a double
    rounding), nor converted to fp16 (its scales would become fp16, which the runtime refuses): say so, in one
    line, naming what makes it int8."""
    what = quantized_form(src.path)
    if what:
        raise GateError(src.path, None, f"is already quantized ({what}): {step} takes a float model; gate this "
                                        "one as it is (a variant without this step)")


def int8_dynamic(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Dynamic int8: weights quantized ahead of time, activations at run time (the seeds' 42 MB case).

    `ops = "matmul"` quantizes only MatMul and Gemm (transformers, what dynamic int8 is made for); with every op,
    convolutions become ConvInteger, which ONNX Runtime runs several times slower than float Conv on many CPUs
    (test_speedup measures it, and says why with why_slow)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    refuse_quantized(src, "ort_int8_dynamic")
    path = out / "model.onnx"
    ops = {"all": None, "matmul": ["MatMul", "Gemm"]}[params["ops"]]
    quantize_dynamic(src.path, path, weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                     per_channel=params["per_channel"], reduce_range=params["reduce_range"],
                     nodes_to_exclude=_nodes_taking(src.path, params["keep_float"]))
    return path


def _nodes_taking(path: Path, weights: list[str]) -> list[str]:
    """Mixed precision: the nodes that take these float weights (by the float model's names), left in float by
    the quantizer. A name no node takes is a mistake, said with the names there are."""
    import onnx

    if not weights:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    taking = {w: [n.name for n in graph.node if w in n.input] for w in weights}
    if unknown := [w for w, nodes in taking.items() if not nodes]:
        known = sorted(w for w in inits if any(w in n.input for n in graph.node) and w.endswith("weight"))
        raise ValueError(f"keep_float names {unknown[0]!r}, which no node of the model takes (weights: "
                         f"{', '.join(known[:8])}{' ...' if len(known) > 8 else ''})")
    # quantize_dynamic first rewrites a Gemm as MatMul + Add, named after it: exclude those by their new names too
    return sorted({m for nodes in taking.values() for n in nodes for m in (n, f"{n}_MatMul", f"{n}_Add")})


def why_slow(path: Path) -> str | None:
    """What in an ONNX model is known to run slower than its float form, and the faster forms, or None."""
    if "ConvInteger" not in _op_types(path):
        return None
    return ("its convolutions run as ConvInteger (dynamic int8), ONNX Runtime's integer convolution, slower than "
            "float Conv on many x86 CPUs: the likely cause; ort_int8_static (QLinearConv) or ort_int8_dynamic with "
            'ops = "matmul" (convolutions kept in float) avoid it')


def _op_types(path: Path) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def _callers(paths: list[Path], ctx) -> list:
    """A zero-argument call of each model on the model's example inputs, by the gate's own ONNX runner on one thread
    (as the gate times)."""
    from tinygate.artifacts import runner_all

    xs = ctx.example_inputs()
    runs = [runner_all(Artifact("onnx", p, "", ""), threads=1) for p in paths]
    return [lambda run=run: run(*xs) for run in runs]


def _max_rounds(calls: list, seconds: float = 2.0) -> int:
    """As many rounds (multiples of 20, 20 to 120) as fit in `seconds` of timing, from one call of each."""
    import time

    start = time.perf_counter()
    for call in calls:
        call()
    per_round = time.perf_counter() - start
    return int(min(max(seconds / max(per_round, 1e-9), 20), 120)) // 20 * 20


def calibration_reader(names: tuple[str, ...], data):
    """An onnxruntime.quantization CalibrationDataReader feeding a Dataset one sample at a time, by input name."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([dict(zip(names, data.sample(i), strict=True)) for i in range(len(data))])

        def get_next(self):
            return next(self._items, None)

    return Reader()


FORMATS = ("qdq", "qoperator")


def int8_static(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Static int8, activation ranges calibrated on the model's calibration set, in QDQ or QOperator form.

    Both forms hold the same integers; ONNX Runtime fuses QDQ pairs into the QOperator kernels where it can, so
    their speed is usually equal, not always. `format = "auto"` builds both and times them interleaved here:
    QOperator only where it is at least 10% faster with significance, QDQ where it is (or where they tie: it is
    the form every execution provider takes). The reason is kept with the artifact and shown in the summary."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    refuse_quantized(src, "ort_int8_static")
    prepared = out / "prepared.onnx"
    quant_pre_process(str(src.path), str(prepared))
    forms = FORMATS if params["format"] == "auto" else (params["format"],)
    built = {form: out / f"{form}.onnx" for form in forms}
    for form, path in built.items():
        quantize_static(prepared, path, calibration_reader(ctx.model.input_names, ctx.calibration()),
                        quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[form],
                        per_channel=params["per_channel"], reduce_range=params["reduce_range"],
                        activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=methods[params["calibration"]],
                        nodes_to_exclude=_nodes_taking(prepared, params["keep_float"]))
    prepared.unlink()
    form = forms[0]
    if len(forms) > 1:
        form, why = _faster_form(built, ctx)
        (out / "choice").write_text(why)
    path = out / "model.onnx"
    built.pop(form).rename(path)
    for other in built.values():
        other.unlink()
    return path


def _faster_form(built: dict[str, Path], ctx) -> tuple[str, str]:
    """QOperator where QDQ takes at least 10% longer (one-sided Wilcoxon p < 0.001 on interleaved rounds,
    regression.compare_latency), else QDQ; with the reason, in words."""
    from tinygate.regression import compare_latency

    qdq, qop = calls = _callers([built["qdq"], built["qoperator"]], ctx)
    smaller = 1 - built["qoperator"].stat().st_size / built["qdq"].stat().st_size
    decision = compare_latency(qop, qdq, slowdown_pct=10, max_rounds=_max_rounds(calls))
    how = (f"QDQ takes {decision.median_ratio:.2f}x QOperator's time over {decision.rounds} interleaved rounds, one "
           f"thread, on this CPU; QOperator is {100 * smaller:.0f}% smaller on disk")
    if decision.regressed:
        return "qoperator", f"QOperator: {how}"
    return "qdq", (f"QDQ: {how}; QOperator is not 10% faster, and QDQ is the form every execution provider takes "
                   '(format = "qoperator" for the smaller file)')
