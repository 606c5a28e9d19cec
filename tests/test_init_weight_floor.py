"""`tinygate init` never writes a config that fails its first run on the weight-SQNR floor: a per-tensor int8
variant whose worst weight falls under the default floor gets its floor from today's figure, with a warning;
the floor is 6 dB lower for ONNX Runtime's 7-bit `reduce_range`; and the floor still fails a worse weight."""

from __future__ import annotations

import re
import tomllib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinygate import cli
from tinygate.budgets import default_weight_sqnr_db

pytestmark = pytest.mark.slow


def _outlier_model(path, columns: int) -> None:
    """x @ W for a 64 x `columns` W of small weights and one large one: per tensor, the large one sets the scale
    and most small weights round to zero (weight SQNR near 20 dB with 8 columns, 12 dB with 64), while the
    outputs, dominated by the large weight, stay lossy rather than broken."""
    w = np.random.default_rng(0).normal(0, 0.01 if columns == 8 else 0.02, (64, columns)).astype(np.float32)
    w[0, 0] = 2.0
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "outlier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, columns])],
                              [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_default_floor_follows_the_bits():
    assert default_weight_sqnr_db("ort_int8_dynamic", {}) == 30.0
    assert default_weight_sqnr_db("ort_int8_static", {"reduce_range": True}) == 24.0
    assert default_weight_sqnr_db("coreml_palettize", {"nbits": 4}) == 18.0


def test_init_holds_a_low_weight_sqnr_where_it_is_and_the_gate_passes_then_fails_a_worse_one(tmp_path, run_gate,
                                                                                              capsys):
    rng = np.random.default_rng(1)
    _outlier_model(tmp_path / "outlier.onnx", 8)
    np.savez(tmp_path / "eval.npz", inputs=rng.normal(0, 1, (32, 64)).astype(np.float32))
    config = tmp_path / "gate.toml"
    assert cli.main(["init", str(tmp_path / "outlier.onnx"), "--data", str(tmp_path / "eval.npz"),
                     "--config", str(config), "--cache-dir", str(tmp_path / "cache")]) == 0
    text = config.read_text()
    variant = tomllib.loads(text)["models"]["outlier"]["variants"]["int8_dynamic"]
    floor = variant["budgets"]["min_weight_sqnr_db"]
    measured = float(re.search(r"weight_sqnr_db ([\d.]+)", text.split("variants.int8_dynamic]")[1]).group(1))
    assert measured < 24 and floor == pytest.approx(measured - 3, abs=0.06), text
    assert re.search(r"WARNING: .*worst quantized weight \(W\S*\) is at [\d.]+ dB SQNR, under the default floor "
                     r"of 24 dB; per_channel = true usually lifts it", text), text

    passed = run_gate(config, "-m", "quantization", cache=tmp_path / "cache")
    assert passed.returncode == 0, passed.output

    # the same variant of a wider layer with the same outlier: its weights lose 8 dB more, and the floor holds
    _outlier_model(tmp_path / "outlier.onnx", 64)
    failed = run_gate(config, "-m", "quantization", cache=tmp_path / "cache")
    assert failed.returncode == 1, failed.output
    assert re.search(r"outlier-int8_dynamic: worst quantized weight's SQNR [\d.]+ dB is below the floor "
                     rf"{floor:g} dB", failed.output), failed.output


def test_the_floor_init_writes_is_never_below_zero_and_a_weight_check_that_raises_keeps_the_variant(monkeypatch):
    """A weight SQNR under 3 dB would give a negative floor, which the config refuses (init would write nothing);
    a check that cannot read the weights is said in the variant's warning, not taken for a broken model."""
    from types import SimpleNamespace

    from tinygate import checks, init
    from tinygate.checks import Check

    step = SimpleNamespace(name="ort_int8_dynamic", params={"reduce_range": True})
    gate = SimpleNamespace(variant=lambda v: v)
    monkeypatch.setattr(checks, "weight_sqnr", lambda run: [Check("m", "v", "min_weight_sqnr_db", 2.8, 24.0, "dB",
                                                                  "fail", "onnx", "worst tensor W_quantized")])
    figures, budgets = {}, {}
    said = init._weight_floor(gate, None, step, figures, budgets)
    assert budgets == {"min_weight_sqnr_db": 0.0} and figures == {"weight_sqnr_db": 2.8}
    assert "W_quantized) is at 2.8 dB SQNR, under the default floor of 24 dB; per_channel = true" in said

    def unreadable(run):
        raise ValueError("quantized tensor(s) X match no float weight")
    monkeypatch.setattr(checks, "weight_sqnr", unreadable)
    budgets = {}
    said = init._weight_floor(gate, None, step, {}, budgets)
    assert budgets == {} and "could not read it (ValueError: quantized tensor(s) X match" in said
