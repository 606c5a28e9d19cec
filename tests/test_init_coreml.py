"""`tinygate init` on a PyTorch model proposes the Core ML variants that `pytest model_tests -m coreml` selects
(test_gate_any_model shows them written and passing); without coremltools it leaves them out, saying how to get
them, and writes the rest."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import save_file

from tinygate import cli, init

NET = '''
import torch

def build():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
'''


def test_without_coremltools_the_core_ml_variants_are_left_out_saying_how_to_get_them(tmp_path, monkeypatch):
    (tmp_path / "tiny.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    import tiny

    save_file(tiny.build().state_dict(), tmp_path / "tiny.safetensors")
    np.savez(tmp_path / "eval.npz", inputs=np.random.default_rng(0).random((16, 8), dtype=np.float32))
    monkeypatch.setattr(init, "_importable", lambda module: module != "coremltools")
    assert cli.main(["init", str(tmp_path / "tiny.safetensors"), "--factory", "tiny:build", "--data",
                     str(tmp_path / "eval.npz"), "--config", str(tmp_path / "gate.toml"), "--cache-dir",
                     str(tmp_path / "cache")]) == 0
    text = (tmp_path / "gate.toml").read_text()
    for name in ("coreml", "coreml_int8", "coreml_palettize"):
        assert f"[models.tiny.variants.{name}]" not in text
        assert (f"# variant {name} ([{{ step = \"coreml\" }}" in text
                and "left out: coremltools is not installed (pip install 'tinygate[coreml]')" in text), text
    assert "[models.tiny.variants.onnx]" in text
