"""An fp16 variant whose weights or activations leave fp16's range fails its checks naming the tensor and its
largest magnitude against 65504, in one line (not a bare `RuntimeWarning: overflow encountered in cast`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinygate import Gate

pytestmark = pytest.mark.slow

NET = '''
import torch


def build():
    return torch.nn.Sequential(torch.nn.Linear(64, 4))
'''
CONFIG = '''
[models.wide]
factory = "wide_net:build"
weights = "wide.safetensors"
task = "fidelity"
input = { name = "x", shape = [1, 64] }
output = { name = "y" }
eval = { npz = "eval.npz" }

[models.wide.variants.float]
steps = []
budgets = {}

[models.wide.variants.ort_half]
steps = [{ step = "onnx_export" }, { step = "ort_fp16" }]
budgets = { min_output_cosine = 0.9 }

[models.wide.variants.coreml_half]
steps = [{ step = "coreml", precision = "fp16" }]
budgets = { min_output_cosine = 0.9 }
'''


@pytest.mark.parametrize(("weight", "where"), [
    (1e5, "weight '0.weight' reaches 100000, beyond fp16's largest value 65504"),  # the weights themselves
    (2e3, "output 'y' reaches 128000, beyond fp16's largest value 65504"),  # in range, their sum is not
], ids=["weights", "activations"])
def test_an_fp16_variant_out_of_range_is_named_not_crashed(tmp_path: Path, monkeypatch, weight, where):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "wide_net.py").write_text(NET)
    (tmp_path / "gate.toml").write_text(CONFIG)
    np.savez(tmp_path / "eval.npz", inputs=np.ones((4, 64), np.float32))
    save_file({"0.weight": torch.full((4, 64), weight), "0.bias": torch.zeros(4)}, tmp_path / "wide.safetensors")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home_cache"))
    try:
        gate = Gate(tmp_path / "gate.toml", cache_dir=tmp_path / "cache")
        verdicts = {c.variant: c for c in gate.judge() if c.check == "min_output_cosine"}
    finally:
        sys.modules.pop("wide_net", None)
    coreml = verdicts["coreml_half"]
    assert coreml.verdict == "not measured" and where in coreml.reason and "\n" not in coreml.reason, coreml
    ort = verdicts["ort_half"]
    if weight > 65504:
        assert ort.verdict == "not measured" and where in ort.reason, ort
    else:  # ONNX Runtime's CPU provider runs this fp16 MatMul in float32 (a Cast around it): nothing overflows here
        assert ort.verdict == "pass", ort
