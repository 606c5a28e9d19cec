"""Per-layer attribution: which layers of a quantized variant lose the most against the float model.

Layer outputs are compared on a few evaluation inputs, as SQNR in dB (lower is worse):
- ONNX Runtime static QDQ: onnxruntime.quantization.qdq_loss_debug, float ONNX model against QDQ model;
- PyTorch int8: forward hooks on the float model and on the converted FX model, module by module;
- other quantized variants (dynamic int8, Core ML): their runtime exposes no intermediate outputs here, so
  the attribution falls back to each layer's weight SQNR read from the artifact (and says so).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinygate import quant, quant_artifacts
from tinygate.artifacts import Artifact, load_torch
from tinygate.data import Dataset


@dataclass(frozen=True)
class LayerLoss:
    layer: str
    sqnr_db: float
    what: str  # "output" or "weight"


def explain(step: str, params: dict, before: Artifact, after: Artifact, input_names: tuple[str, ...], inputs: Dataset,
            calibration: Dataset | None, float_weights: dict[str, list[np.ndarray]], top: int = 5) -> list[LayerLoss]:
    """The `top` layers with the lowest SQNR for the quantizing `step` that turned `before` into `after`."""
    if step == "ort_int8_static":
        losses = _onnx_qdq(before.path, after.path, input_names, inputs)
    elif step == "torch_int8" and before.factory:  # a judged bundle has no model code to hook: weights, below
        losses = _torch_int8(before, params, calibration, inputs)
    else:
        losses = [LayerLoss(c.stored, c.sqnr_db, "weight") for c in
                  (quant_artifacts.check_best(t, float_weights[t.name])
                   for t in quant_artifacts.read(after, float_weights))]
    return sorted(losses, key=lambda loss: loss.sqnr_db)[:top]


def describe(losses: list[LayerLoss]) -> str:
    if not losses:
        return "no layer could be attributed"
    what = "layer outputs" if losses[0].what == "output" else "layer weights (outputs not observable here)"
    return f"worst {what}: " + ", ".join(f"{loss.layer} {loss.sqnr_db:.1f} dB" for loss in losses)


def _onnx_qdq(float_path: Path, qdq_path: Path, input_names: tuple[str, ...], inputs: Dataset) -> list[LayerLoss]:
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from tinygate.steps.onnx_steps import calibration_reader as _Reader

    with tempfile.TemporaryDirectory() as tmp:
        aug_float, aug_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        dbg.modify_model_output_intermediate_tensors(float_path, aug_float)
        dbg.modify_model_output_intermediate_tensors(qdq_path, aug_qdq)
        float_acts = dbg.collect_activations(str(aug_float), _Reader(input_names, inputs))
        qdq_acts = dbg.collect_activations(str(aug_qdq), _Reader(input_names, inputs))
    errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts))
    return [LayerLoss(name, float(err["xmodel_err"]), "output") for name, err in errors.items()
            if "xmodel_err" in err]


def _torch_int8(before: Artifact, params: dict, calibration: Dataset, inputs: Dataset) -> list[LayerLoss]:
    """Rebuild the int8 model in memory exactly as the torch_int8 step does, then compare each quantized
    module's output with the float module of the same name (ReLU applied where the int8 module fused it)."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = params["backend"]
    float_model = load_torch(before)
    with warnings.catch_warnings():  # deprecations and observer notes, as in tinygate/steps/torch_int8.py
        warnings.simplefilter("ignore")
        prepared = prepare_fx(load_torch(before), get_default_qconfig_mapping(params["backend"]),
                              example_inputs=tuple(torch.from_numpy(x) for x in inputs.sample(0)))
        with torch.inference_mode():
            for i in range(len(calibration)):
                prepared(*(torch.from_numpy(x) for x in calibration.sample(i)))
        int8 = convert_fx(prepared)
    seen: dict[str, dict[str, list[np.ndarray]]] = {}

    def hook(side: str, name: str):
        def record(_module, _inputs, output):
            out = output.dequantize() if output.is_quantized else output
            seen.setdefault(name, {}).setdefault(side, []).append(out.detach().numpy().copy())
        return record

    int8_modules = {n: m for n, m in int8.named_modules() if "quantized" in type(m).__module__ and n}
    fused_relu = {n for n, m in int8_modules.items() if "ReLU" in type(m).__name__}
    handles = [m.register_forward_hook(hook("int8", n)) for n, m in int8_modules.items()]
    handles += [m.register_forward_hook(hook("float", n)) for n, m in float_model.named_modules() if n in int8_modules]
    with torch.inference_mode():
        for i in range(len(inputs)):
            xs = tuple(torch.from_numpy(x) for x in inputs.sample(i))
            float_model(*xs)
            int8(*xs)
    for h in handles:
        h.remove()
    losses = []
    for name, sides in seen.items():
        if "float" in sides and "int8" in sides:
            ref = np.concatenate(sides["float"])
            ref = np.maximum(ref, 0) if name in fused_relu else ref
            losses.append(LayerLoss(name, quant.sqnr_db(ref, np.concatenate(sides["int8"])), "output"))
    return losses
