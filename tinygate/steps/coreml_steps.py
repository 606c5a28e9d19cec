"""Core ML steps: conversion to an mlprogram, then weight compression with coremltools.optimize.coreml."""

from __future__ import annotations

from pathlib import Path

from tinygate.artifacts import Artifact, load_torch


def convert(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """ct.convert of the traced model to an mlprogram, fp16 compute precision unless fp32 is asked."""
    import coremltools as ct
    import torch

    model = load_torch(src)
    if params["precision"] == "fp16":
        from tinygate.steps import check_fp16_range

        check_fp16_range({k: v.detach().numpy() for k, v in model.state_dict().items() if v.is_floating_point()},
                         "Core ML fp16")
    example = tuple(torch.from_numpy(x) for x in ctx.example_inputs())
    with torch.inference_mode():
        traced = torch.jit.trace(model, example)
    precision = ct.precision.FLOAT16 if params["precision"] == "fp16" else ct.precision.FLOAT32
    try:
        mlmodel = ct.convert(traced, convert_to="mlprogram", compute_precision=precision,
                             inputs=[ct.TensorType(name=n, shape=s) for n, s in ctx.model.inputs],
                             outputs=[ct.TensorType(name=n) for n in ctx.model.output_names],
                             minimum_deployment_target=getattr(ct.target, params["target"]))
    except TypeError as exc:
        if "only 0-dimensional arrays can be converted" not in str(exc):
            raise
        import numpy as np

        raise TypeError(f"{exc}: a coremltools {ct.__version__} bug with numpy {np.__version__} (coremltools issues "
                        "2633 and 2755): install numpy<2.4; most often it is int() of a shape, as in "
                        "x.view(x.size(0), -1), which torch.flatten(x, 1) avoids") from exc
    path = out / "model.mlpackage"
    mlmodel.save(str(path))
    return path


def _load(src: Artifact):
    import coremltools as ct

    return ct.models.MLModel(str(src.path), skip_model_load=True)


def linear_int8(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Linear int8 weight quantization (constexpr dequantize ops in the saved program)."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
        mode=params["mode"], dtype="int8", granularity=params["granularity"],
        weight_threshold=params["weight_threshold"]))
    path = out / "model.mlpackage"
    cto.linear_quantize_weights(_load(src), config).save(str(path))
    return path


def palettize(src: Artifact, params: dict, ctx, out: Path) -> Path:
    """Weight palettization: each weight becomes an nbits index into a look-up table (k-means)."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(
        nbits=params["nbits"], mode=params["mode"], weight_threshold=params["weight_threshold"]))
    path = out / "model.mlpackage"
    cto.palettize_weights(_load(src), config).save(str(path))
    return path
