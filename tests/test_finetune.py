"""The finetune step on the bundled digits model: deterministic given a seed, pruned zeros stay zero, the
quantization-aware forms save weights already on what the later step stores, and distillation recovers the
float model's outputs after pruning (the regression it guards against: a fine-tune that does nothing)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from bundled import REPO
from safetensors.torch import load_file

from tinygate import pipeline, quant
from tinygate.artifacts import Artifact, load_torch
from tinygate.config import load
from tinygate.steps import STEPS
from tinygate.steps.finetune import finetune
from tinygate.steps.prune import prune


@pytest.fixture(scope="module")
def digits():
    model = load(REPO / "gate.toml").models["digits"]
    data = pipeline.load_data(model.calibration, "calibration")
    return SimpleNamespace(model=model, calibration=lambda: data), pipeline.float_artifact(model)


def _tuned(ctx, src: Artifact, out: Path, **params) -> dict[str, torch.Tensor]:
    out.mkdir(parents=True, exist_ok=True)
    full = {k: p.default for k, p in STEPS["finetune"].params.items()} | {"steps": 40, "lr": 1e-3} | params
    return load_file(finetune(src, full, ctx, out))


def _pruned(ctx, src: Artifact, out: Path) -> Artifact:
    out.mkdir(parents=True, exist_ok=True)
    path = prune(src, {"rate": 0.5}, ctx, out)
    return Artifact("torch", path, "pruned", src.factory)


def _agreement(ctx, src: Artifact) -> float:
    """Mean squared difference of the logits from the float model's on the calibration inputs."""
    x = torch.from_numpy(np.array(ctx.calibration().inputs))
    with torch.no_grad():
        return float(((load_torch(src)(x) - load_torch(pipeline.float_artifact(ctx.model))(x)) ** 2).mean())


def test_the_same_seed_gives_the_same_weights_and_another_seed_others(digits, tmp_path):
    ctx, src = digits
    src = _pruned(ctx, src, tmp_path / "pruned")  # the float model itself has nothing to learn from itself
    a, b = _tuned(ctx, src, tmp_path / "a"), _tuned(ctx, src, tmp_path / "b")
    c = _tuned(ctx, src, tmp_path / "c", seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_pruned_zeros_stay_zero_and_the_outputs_come_back_towards_the_float_model(digits, tmp_path):
    ctx, src = digits
    pruned = _pruned(ctx, src, tmp_path / "pruned")
    zeros = {k: v == 0 for k, v in load_file(pruned.path).items() if k.endswith("weight")}
    tuned_path = tmp_path / "tuned"
    tuned = _tuned(ctx, pruned, tuned_path, steps=150)
    assert all(bool((tuned[k][z] == 0).all()) for k, z in zeros.items())
    after = _agreement(ctx, Artifact("torch", tuned_path / "model.safetensors", "tuned", src.factory))
    assert after < 0.5 * _agreement(ctx, pruned), "fine-tuning did not bring the pruned model's outputs closer"


@pytest.mark.parametrize("nbits", [2, 3])
def test_palettize_aware_weights_hold_at_most_two_to_the_nbits_values_per_layer(digits, tmp_path, nbits):
    ctx, src = digits
    tuned = _tuned(ctx, src, tmp_path, quantize="palettize", nbits=nbits)
    for name, w in tuned.items():
        if name.endswith("weight") and w.dim() > 1:
            assert torch.unique(w).numel() <= 2 ** nbits, name


def test_int8_aware_weights_are_what_the_per_channel_symmetric_quantizer_stores(digits, tmp_path):
    """The saved weights survive the reference quantizer's round trip (tinygate.quant, symmetric int8 per output
    channel) unchanged: what a later int8 step stores is what was fine-tuned."""
    ctx, src = digits
    tuned = _tuned(ctx, src, tmp_path, quantize="int8")
    for name, w in tuned.items():
        if name.endswith("weight") and w.dim() > 1:
            w = w.numpy()
            p = quant.calibrate(w, symmetric=True, axis=0, restricted=True)
            np.testing.assert_allclose(quant.dequantize(quant.quantize(w, p), p), w, rtol=0, atol=1e-6,
                                       err_msg=name)
