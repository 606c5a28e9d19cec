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


def refuse_quantized(src: Artifact, step: str) -> None:
    """A model that is already int8 is not quantized again (the result would be the same model, or a double
    rounding), nor converted to fp16 (its scales would become fp16, which the runtime refuses): say so, in one
    line, naming what makes it int8."""
    import onnx

    graph = onnx.load(str(src.path), load_external_data=False).graph
    found = sorted({n.op_type for n in graph.node if n.op_type in QUANTIZED_OPS})
    int8 = [t.name for t in graph.initializer if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    if found or int8:
        what = f"{', '.join(found)} nodes" if found else f"int8 initializers ({', '.join(int8[:3])})"
        raise GateError(src.path, None, f"is already quantized ({what}): {step} takes a float model; gate this "
                                        "one as it is (a variant without this step)")


def int8_dynamic(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Dynamic int8: weights quantized ahead of time, activations at run time (the seeds' 42 MB case)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    refuse_quantized(src, "ort_int8_dynamic")
    path = out / "model.onnx"
    quantize_dynamic(src.path, path, weight_type=QuantType.QInt8,
                     per_channel=params["per_channel"], reduce_range=params["reduce_range"])
    return path


def calibration_reader(names: tuple[str, ...], data):
    """An onnxruntime.quantization CalibrationDataReader feeding a Dataset one sample at a time, by input name."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter([dict(zip(names, data.sample(i), strict=True)) for i in range(len(data))])

        def get_next(self):
            return next(self._items, None)

    return Reader()


def int8_static(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Static int8 in QDQ format, activation ranges calibrated on the model's calibration set."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    refuse_quantized(src, "ort_int8_static")
    prepared = out / "prepared.onnx"
    quant_pre_process(str(src.path), str(prepared))
    path = out / "model.onnx"
    quantize_static(prepared, path, calibration_reader(ctx.model.input_names, ctx.calibration()),
                    quant_format=QuantFormat.QDQ, per_channel=params["per_channel"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=methods[params["calibration"]])
    prepared.unlink()
    return path
