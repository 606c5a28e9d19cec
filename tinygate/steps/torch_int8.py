"""torch_int8: static post-training int8 quantization in PyTorch, running real int8 CPU kernels.

Which API, and why: FX graph mode from torch.ao.quantization (prepare_fx / convert_fx). It is
deprecated in favour of torchao's pt2e flow, but pt2e only produces real int8 kernels once lowered
through torch.compile/Inductor (a C++ toolchain at run time, minutes per model), while FX convert_fx
gives quantized::conv2d / quantized::linear modules (fbgemm/x86 or qnnpack kernels) straight away,
needs no QuantStub edits to the user's model, and keeps each layer's int8 weight readable.
The result is saved with TorchScript (deprecated as well, but the format PyTorch Mobile deploys,
and it loads without unpickling Python objects).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from tinygate.artifacts import Artifact, load_torch


def quantize(src: Artifact, params: dict, ctx, out: Path) -> Path:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = params["backend"]
    torch.backends.quantized.engine = engine
    model = load_torch(src)
    example = tuple(torch.from_numpy(x) for x in ctx.example_inputs())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deprecation the module docstring explains
        prepared = prepare_fx(model, get_default_qconfig_mapping(engine), example_inputs=example)
        with torch.inference_mode():
            calibration = ctx.calibration()
            for i in range(len(calibration)):
                prepared(*(torch.from_numpy(x) for x in calibration.sample(i)))
        quantized = convert_fx(prepared)
    with torch.inference_mode():
        scripted = torch.jit.trace(quantized, example)
    path = out / "model.pt"
    torch.jit.save(scripted, str(out / "with_debug.pt"))
    _strip_debug_info(out / "with_debug.pt", path)
    (out / "engine").write_text(engine)
    return path


def _strip_debug_info(src: Path, dst: Path) -> None:
    """Drop TorchScript's *.debug_pkl entries (source ranges for error messages, a third of a tiny
    model's file); the model loads and computes the same without them."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if not info.filename.endswith(".debug_pkl"):
                zout.writestr(info, zin.read(info.filename))
    src.unlink()
