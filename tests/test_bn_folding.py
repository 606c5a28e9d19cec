"""Quantized weights of a network with BatchNorm are checked against the float weights with each BatchNorm folded
in (as the ONNX exporter, PyTorch's int8 conversion and coremltools fold them), matched by value where a converter
renamed the fused layer; and a quantized weight off by more than its bound still fails."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors.torch import save_file
from user_code import BN_NET, user_module

from tinygate import Gate, quant_artifacts
from tinygate.artifacts import Artifact, bn_folded_weights

pytestmark = pytest.mark.slow

CONFIG = """
[models.bn]
factory = "bnnet:build"
weights = "bn.safetensors"
task = "fidelity"
input = { name = "input", shape = [1, 3, 16, 16] }
output = { name = "output" }
eval = { npz = "eval.npz" }
calibration = { npz = "calib.npz" }

[models.bn.variants.float]
steps = []
budgets = { max_size_kb = 100 }

[models.bn.variants.onnx_int8_dynamic]
steps = [{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]
budgets = { min_output_sqnr_db = 20 }
[models.bn.variants.onnx_int8_static]
steps = [{ step = "onnx_export" }, { step = "ort_int8_static" }]
budgets = { min_output_sqnr_db = 20 }
[models.bn.variants.torch_int8]
steps = [{ step = "torch_int8" }]
budgets = { min_output_sqnr_db = 20 }
[models.bn.variants.coreml_int8]
steps = [{ step = "coreml" }, { step = "coreml_int8" }]
budgets = { min_output_sqnr_db = 20 }
"""


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    root = tmp_path_factory.mktemp("bn")
    bnnet = user_module(root, "bnnet", BN_NET)
    torch.manual_seed(0)
    model = bnnet.build()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # statistics a trained net has
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.2, 3.0)
        bn.weight.data.uniform_(0.3, 2.0)
        bn.bias.data.uniform_(-0.3, 0.3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, root / "bn.safetensors")
    rng = np.random.default_rng(0)
    np.savez(root / "eval.npz", inputs=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    np.savez(root / "calib.npz", inputs=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    (root / "gate.toml").write_text(CONFIG)
    return Gate(root / "gate.toml")


def test_each_batchnorm_is_folded_into_the_layer_before_it(gate):
    run = gate.variant("bn-torch_int8")
    folded = bn_folded_weights(run.float_artifact())
    assert set(folded) == {"features.0.weight", "features.0.bias", "features.0.weight_bias",
                           "features.3.weight", "features.3.bias", "features.3.weight_bias"}
    raw = run.reference_weights()["features.0.weight"][0]
    assert np.abs(folded["features.0.weight"] - raw).max() > 0.1  # against the raw weight every check would fail


@pytest.mark.parametrize("kind", ["onnx_int8_dynamic", "onnx_int8_static", "torch_int8", "coreml_int8"])
def test_quantized_weights_of_folded_layers_are_within_their_bound(gate, kind):
    checks = {c.check: c for c in gate.variant(f"bn-{kind}").judge()}
    assert checks["weight_error_vs_bound"].verdict == "pass", checks["weight_error_vs_bound"]
    assert checks["min_weight_sqnr_db"].value > 40


def test_coreml_renamed_fused_layers_are_matched_by_value_one_weight_each(gate):
    run = gate.variant("bn-coreml_int8")
    tensors = quant_artifacts.read(run.artifact(), run.reference_weights())
    assert any(t.stored.startswith("const_") for t in tensors)  # coremltools' names for the fused convolutions
    assert sorted(t.name for t in tensors) == ["features.0.weight", "features.3.weight", "head.weight"]


def test_a_folded_weight_off_by_two_steps_fails_naming_the_tensor(gate, tmp_path):
    run = gate.variant("bn-onnx_int8_dynamic")
    copy = tmp_path / "model.onnx"
    shutil.copy(run.artifact().path, copy)
    model = onnx.load(str(copy))
    for init in model.graph.initializer:
        if init.name == "features.3.weight_quantized":
            q = numpy_helper.to_array(init).copy()
            q.flat[5] = q.flat[5] + 2 if q.flat[5] < 100 else q.flat[5] - 2
            init.CopyFrom(numpy_helper.from_array(q, init.name))
    onnx.save(model, str(copy))
    refs = run.reference_weights()
    checks = [quant_artifacts.check_best(t, refs[t.name])
              for t in quant_artifacts.read(Artifact("onnx", copy, "x", ""), refs)]
    bad = [c.stored for c in checks if not c.within_bound]
    assert bad == ["features.3.weight_quantized"]
