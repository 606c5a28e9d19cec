"""`tinygate init` on a PyTorch model proposes the Core ML variants that `pytest model_tests -m coreml` selects
(test_gate_any_model shows them written and passing); without coremltools it leaves them out, saying how to get
them, and writes the rest."""

from __future__ import annotations

import re

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
        assert re.search(rf"^# variant {name} \(\[\{{ step = \"coreml\" \}}.*\) left out: coremltools is not "
                         r"installed: pip install 'tinygate\[coreml\]', remove this model's entry and run tinygate "
                         r"init again$", text, re.M), text
    assert "[models.tiny.variants.onnx]" in text


def test_core_ml_figures_say_they_come_from_the_interpreter_and_no_min_speedup_is_written(tmp_path, monkeypatch):
    """Off macOS the figures are the MIL interpreter's (a lower bound of a device's error), and Core ML is timed
    on macOS only: a min_speedup written there would fail this config's CI on Linux."""
    from tinygate import artifacts, config

    (tmp_path / "tiny.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    import tiny

    save_file(tiny.build().state_dict(), tmp_path / "tiny.safetensors")
    np.savez(tmp_path / "eval.npz", inputs=np.random.default_rng(0).random((16, 8), dtype=np.float32))
    budgets = init._budgets  # as if every variant had been timed (Core ML is, on macOS): min_speedup 1.5
    monkeypatch.setattr(init, "_budgets", lambda figures, *rest: {
        **budgets(figures, *rest), **({"min_speedup": 1.5} if "sqnr_db" in figures else {})})  # not the float
    assert cli.main(["init", str(tmp_path / "tiny.safetensors"), "--factory", "tiny:build", "--data",
                     str(tmp_path / "eval.npz"), "--config", str(tmp_path / "gate.toml"), "--cache-dir",
                     str(tmp_path / "cache")]) == 0
    text = (tmp_path / "gate.toml").read_text()
    cfg = config.load(tmp_path / "gate.toml")
    assert cfg.models["tiny"].variants["onnx"].budgets.get("min_speedup") == 1.5
    for name in ("coreml", "coreml_int8", "coreml_palettize"):
        assert "min_speedup" not in cfg.models["tiny"].variants[name].budgets
        if artifacts.coreml_backend() == artifacts.MIL_INTERPRETER:
            assert re.search(rf"\[models.tiny.variants.{name}\]\n# measured \(on the MIL interpreter: a device's "
                             r"error can be larger\): size_kb", text), text
