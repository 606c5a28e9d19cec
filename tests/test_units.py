"""Unit tests of tinygate's small parts: budgets, the cache, metrics, sizes and the report writers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tinygate import metrics, reports
from tinygate.artifacts import Artifact
from tinygate.budgets import BUDGETS
from tinygate.cache import Cache, digest_path


@pytest.mark.parametrize(("key", "value", "budget", "expected"), [
    ("min_psnr_db", 35.0, 35.0, True),
    ("min_psnr_db", 34.99, 35.0, False),
    ("min_psnr_db", math.inf, 35.0, True),  # a perfect reconstruction meets any floor
    ("min_psnr_db", math.nan, 35.0, False),  # an unmeasurable value never passes
    ("max_size_kb", 100.0, 100.0, True),
    ("max_size_kb", 100.001, 100.0, False),
    ("max_size_kb", math.nan, 100.0, False),
])
def test_budget_holds_only_for_measured_values_on_the_right_side(key, value, budget, expected):
    assert BUDGETS[key].holds(value, budget) is expected


def test_cache_builds_an_entry_once_and_finds_it_afterwards(tmp_path):
    cache, calls = Cache(tmp_path), []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "x").write_text("artifact")

    first = cache.get_or_build("k", build)
    second = Cache(tmp_path).get_or_build("k", build)
    assert first == second and len(calls) == 1 and (first / "x").read_text() == "artifact"


def test_a_failing_build_leaves_no_entry_behind(tmp_path):
    cache = Cache(tmp_path)

    def boom(out: Path) -> None:
        (out / "half").write_text("partial")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("k", boom)
    assert not (tmp_path / "k").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_an_incomplete_entry_from_a_killed_run_is_rebuilt(tmp_path):
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "x").write_text("truncated")  # no .complete marker: the writer died
    entry = Cache(tmp_path).get_or_build("k", lambda out: (out / "x").write_text("whole"))
    assert (entry / "x").read_text() == "whole"


def test_folder_digest_changes_with_any_file_content_or_name(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "w.bin").write_bytes(b"\x00" * 10)
    before = digest_path(pkg)
    (pkg / "Data" / "w.bin").write_bytes(b"\x00" * 9 + b"\x01")
    changed = digest_path(pkg)
    (pkg / "Data" / "w.bin").rename(pkg / "Data" / "v.bin")
    assert len({before, changed, digest_path(pkg)}) == 3


def test_sizes_count_a_package_folder_whole_and_compress_for_transfer(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "Data" / "w.bin").write_bytes(b"\x00" * 10_000)
    art = Artifact("mlpackage", pkg, digest_path(pkg), "x:y")
    assert art.disk_bytes() == 10_002
    assert 0 < art.transfer_bytes() < 1_000  # zeros deflate


def test_psnr_and_ssim_come_from_scikit_image_and_punish_noise():
    rng = np.random.default_rng(0)
    target = rng.random((2, 3, 32, 32)).astype(np.float32)
    noisy = target + rng.normal(0, 0.01, target.shape).astype(np.float32)
    scores = metrics.image_scores(noisy, target)
    assert np.all(scores["psnr"] > 39) and np.all(scores["psnr"] < 41)  # sigma 0.01 -> 40 dB
    worse = metrics.image_scores(target + 0.1, target)
    assert np.all(worse["psnr"] < scores["psnr"]) and np.all(worse["ssim"] < scores["ssim"])


def test_images_scored_in_threads_score_the_same_in_the_same_order():
    rng = np.random.default_rng(1)
    target = rng.random((9, 3, 24, 24)).astype(np.float32)
    out = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32) * np.linspace(
        0.5, 1, 9, dtype=np.float32)[:, None, None, None]  # each image its own score
    out[4, 1, 2, 3] = np.nan
    alone, threaded = metrics.image_scores(out, target), metrics.image_scores(out, target, workers=4)
    for name in ("psnr", "ssim"):
        np.testing.assert_array_equal(alone[name], threaded[name])
        assert np.isnan(threaded[name][4]) and np.all(np.diff(np.delete(threaded[name], 4)) > 0)


def test_a_non_finite_output_scores_nan_and_nan_is_never_averaged_away():
    target = np.zeros((2, 3, 8, 8), np.float32)
    out = target.copy()
    out[1, 0, 0, 0] = np.nan
    psnr = metrics.image_scores(out, target)["psnr"]
    assert np.isnan(psnr[1]) and math.isnan(metrics.percentile(psnr, 5))


def test_reports_write_json_markdown_and_plot(tmp_path):
    rec = reports.Recorder()
    rec.figure("m-float", model="m", variant="float", size_kb=10.0, psnr_db=40.0)
    rec.figure("m-int8", model="m", variant="int8", size_kb=3.0, psnr_db=39.0)
    rec.record("m", "int8", "max_size_kb", 3.0, 2.5, "KB", False, "onnx")
    paths = reports.write(rec, tmp_path, exitstatus=1)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["checks"][0] | {} == {**doc["checks"][0], "model": "m", "variant": "int8", "check": "max_size_kb",
                                    "value": 3.0, "budget": 2.5, "passed": False,
                                    "verdict": "fail"}
    assert {"tools", "machine", "hashes", "figures"} <= set(doc)
    assert "**blocked**" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "optimization_results.png").read_bytes()[:4] == b"\x89PNG"
    assert len(paths) == 3


def test_a_quantized_tensor_that_matches_no_float_weight_is_named_not_dropped(tmp_path):
    """A `*_quantized` initializer the reader cannot pair with a float weight stops the check, naming it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tinygate.artifacts import Artifact
    from tinygate.errors import GateError
    from tinygate.quant_artifacts import read

    inits = [numpy_helper.from_array(np.ones((2, 2), np.int8), "fc.weight_quantized"),
             numpy_helper.from_array(np.float32(0.1), "fc.weight_scale"),
             numpy_helper.from_array(np.ones((2, 2), np.int8), "mystery_quantized"),
             numpy_helper.from_array(np.float32(0.1), "mystery_scale")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], inits)
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    art = Artifact("onnx", tmp_path / "m.onnx", "", "")
    w = np.full((2, 2), 0.1, np.float32)
    found = read(art, {"fc.weight": [w], "mystery": [w]})
    assert [t.stored for t in found] == ["fc.weight_quantized", "mystery_quantized"]
    with pytest.raises(GateError, match="quantized tensor.s. mystery_quantized match no float weight"):
        read(art, {"fc.weight": [w]})


@pytest.mark.parametrize(("shape", "axis"), [((6, 5), 1), ((6, 2, 8, 8), 1), ((6, 7, 5), 2)],
                         ids=["logits", "class_map", "sequence"])
def test_top1_agreement_is_taken_along_the_class_axis_at_each_location(shape, axis):
    """A detector's (N, 2, H, W) face map: one decision per location, not one argmax of the flattened map."""
    from tinygate.fidelity import Accumulator

    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, shape)
    out = ref + rng.normal(0, 0.05, shape)  # small noise: nearly every decision stands
    acc = Accumulator("y")
    acc.add(ref, out)
    result = acc.result()
    expected = 100 * np.mean(np.argmax(ref, axis) == np.argmax(out, axis))
    assert result.class_axis == axis and result.top1_agreement_pct == pytest.approx(expected) and expected > 90
    declared = Accumulator("y", class_axis=len(shape) - 1)  # declared in the config: the last axis
    declared.add(ref, out)
    assert declared.result().class_axis == len(shape) - 1


def test_replayed_latency_rule_decides_as_the_live_rule_would():
    """The benchmark judges recorded runs with tinygate.regression.replay_latency: identical timings decide
    "unchanged" after the first 20 rounds, a clear 30% slowdown "regressed", and a run too short is refused."""
    from tinygate.regression import decide_latency, replay_latency

    rng = np.random.default_rng(0)
    base = 0.010 * (1 + 0.02 * rng.random(120))
    same = replay_latency(list(zip(base, base * (1 + 0.01 * rng.standard_normal(120)), strict=True)))
    assert same.verdict == "unchanged" and same.rounds == 20
    slow = list(zip(base, base * 1.3 * (1 + 0.01 * rng.standard_normal(120)), strict=True))
    decision = replay_latency(slow)
    assert decision.regressed and decision == decide_latency(np.array([n / b for b, n in slow[:decision.rounds]]),
                                                             10.0, 0.001, final=False)
    with pytest.raises(ValueError):
        replay_latency(slow[:60])


def test_an_onnx_models_size_and_identity_cover_the_external_data_of_its_constant_nodes(tmp_path):
    """A Constant node can keep its value in an external file like an initializer: counted, hashed, confined."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    from tinygate.errors import GateError
    from tinygate.safety import check_onnx, onnx_files

    value = numpy_helper.from_array(np.ones((64, 64), np.float32), "c")
    graph = helper.make_graph([helper.make_node("Constant", [], ["k"], value=value),
                               helper.make_node("Add", ["x", "k"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="const.bin", size_threshold=0,
                                   convert_attribute=True)
    onnx.save(model, tmp_path / "m.onnx")
    check_onnx(tmp_path / "m.onnx")
    assert onnx_files(tmp_path / "m.onnx") == [tmp_path / "m.onnx", tmp_path / "const.bin"]
    model.graph.node[0].attribute[0].t.external_data[0].value = "../outside.bin"  # the location key
    onnx.save(model, tmp_path / "evil.onnx", save_as_external_data=False)
    with pytest.raises(GateError, match="Constant node .* external data: path '../outside.bin' points outside"):
        check_onnx(tmp_path / "evil.onnx")


def test_labels_that_are_not_one_class_per_sample_are_refused_in_one_line(tmp_path):
    """(N, 1) labels would broadcast against (N,) predictions and report a wrong accuracy."""
    from tinygate.config import DataSpec
    from tinygate.errors import GateError
    from tinygate.pipeline import load_data

    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 3), np.float32), labels=np.zeros((4, 1), np.int64))
    with pytest.raises(GateError, match=r"labels must be one whole-number class per sample, shape \(4,\)"):
        load_data(DataSpec(npz=tmp_path / "d.npz"), "models.m.eval")


def test_memory_bombs_are_refused_before_they_allocate(tmp_path):
    """An .npz that inflates past the cap, an image of too many pixels, and a declared input of billions of
    elements each stop with one line before anything is allocated."""
    from PIL import Image

    from tinygate.config import _inputs, _Reader
    from tinygate.errors import GateError
    from tinygate.safety import check_image, check_npz

    np.savez_compressed(tmp_path / "bomb.npz", inputs=np.zeros((20_000_000,), np.float32))  # 80 MB, ~80 KB
    assert (tmp_path / "bomb.npz").stat().st_size < 1e6
    with pytest.raises(GateError, match="inflates to 80.0 MB, over the 10 MB cap"):
        check_npz(tmp_path / "bomb.npz", max_mb=10)
    Image.new("1", (10_000, 8_000)).save(tmp_path / "huge.png")  # tiny file, 80 megapixels
    with pytest.raises(GateError, match="is 10000 x 8000 = 80 megapixels, over the 50 cap"):
        check_image(tmp_path / "huge.png")
    with pytest.raises(GateError, match=r"shape: \[1, 3, 100000, 100000\] is 30,000,000,000 elements"):
        _inputs(_Reader(tmp_path / "gate.toml", tmp_path), "models.m.input",
                {"name": "x", "shape": [1, 3, 100000, 100000]})


def test_an_onnx_tensor_over_the_cap_is_refused_before_a_session_allocates_it(tmp_path):
    """A ConstantOfShape of [100000, 100000] (40 GB) in a 1 KB model: shape inference sizes it, the runner refuses
    it in one line naming the tensor and the cap; under the cap the same model runs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tinygate.artifacts import Artifact, runner
    from tinygate.errors import GateError

    def model(side: int) -> Artifact:
        graph = helper.make_graph(
            [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0), helper.make_node("Add", ["x", "s"], ["y"])],
            "bomb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            [numpy_helper.from_array(np.array([side, side], np.int64), "shape")])
        path = tmp_path / f"m{side}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
        return Artifact("onnx", path, str(side), "")

    with pytest.raises(GateError, match=r"m100000.onnx: big: tensor of shape \[100000, 100000\] would take 40,000 MB, "
                                        r"over the 2048 MB cap \(--gate-max-tensor-mb\)"):
        runner(model(100_000))
    assert runner(model(10))(np.zeros(1, np.float32)) == pytest.approx([100.0])


def test_an_onnx_loop_with_a_huge_trip_count_is_stopped_in_one_line(tmp_path):
    """A hostile ONNX model must not hang the gate: its call is stopped past --gate-max-call-seconds."""
    import time

    import onnx
    from onnx import TensorProto, helper

    from tinygate import safety
    from tinygate.artifacts import Artifact, runner
    from tinygate.errors import GateError

    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [helper.make_tensor("trips", TensorProto.INT64, [], [10**15]),
         helper.make_tensor("cond", TensorProto.BOOL, [], [True])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "loop.onnx")
    run = runner(Artifact("onnx", tmp_path / "loop.onnx", "", ""))
    safety.set_max_call_seconds(1.0)
    try:
        start = time.monotonic()
        with pytest.raises(GateError, match=r"one inference ran past 1 s and was stopped \(--gate-max-call-seconds\)"):
            run(np.zeros(1, np.float32))
        assert time.monotonic() - start < 10
    finally:
        safety.set_max_call_seconds(120.0)


def test_reports_are_strict_json_naming_each_non_finite_figure(tmp_path):
    """Strict JSON readers reject bare Infinity / NaN: such a figure is written as null, and listed."""
    rec = reports.Recorder()
    rec.figure("m-v", model="m", variant="v", size_kb=1.0, sqnr_db=float("inf"))
    rec.record("m", "v", "max_size_kb", 1.0, 2.0, "KB", True, "onnx")
    reports.write(rec, tmp_path, 0)
    doc = json.loads((tmp_path / "results.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert doc["figures"]["m-v"]["sqnr_db"] is None and doc["non_finite"] == {"figures.m-v.sqnr_db": "inf"}


def test_cache_keys_cover_the_code_they_depend_on_and_only_that():
    """A step's or an evaluation's key hashes the tinygate modules it imports (function-level imports too), so
    editing the reports or the plugin leaves the cache warm, and editing the MIL interpreter does not."""
    from tinygate.cache import _imports

    names = {p.name for p in _imports("tinygate.evaluate")}
    assert {"evaluate.py", "metrics.py", "fidelity.py", "artifacts.py", "mil.py", "data.py"} <= names
    assert not names & {"reports.py", "pytest_plugin.py", "gate.py", "cli.py", "bundle.py", "review.py"}
    assert "onnx_steps.py" in {p.name for p in _imports("tinygate.steps.onnx_steps")}
    assert _imports("user_module") == frozenset()


def test_init_proposes_min_speedup_at_three_quarters_of_what_it_measured():
    from tinygate.init import _budgets

    assert _budgets({"size_kb": 10.0, "speedup": 2.0}, {})["min_speedup"] == 1.5
    assert "min_speedup" not in _budgets({"size_kb": 10.0}, {})  # not timed (a sub-5 ms model, Core ML off macOS)


def test_init_times_no_speedup_for_a_model_that_runs_in_under_5_ms():
    from bundled import REPO

    from tinygate import config
    from tinygate.init import _speedup

    model = config.load(REPO / "gate.toml").models["digits"]  # a fraction of a millisecond a call
    art = Artifact("torch", REPO / "weights" / "digits.safetensors", "d", model.factory)
    assert _speedup(art, art, model) is None


def test_a_factory_or_step_built_on_tinygate_code_is_keyed_by_that_code_too(tmp_path):
    from tinygate.cache import tinygate_sources

    mine = tmp_path / "my_model.py"
    mine.write_text("import torch\n\ndef build():\n    from tinygate.zoo.digits import build as digits\n"
                    "    return digits()\n")
    assert "digits.py" in {p.name for p in tinygate_sources([mine])}
    assert tinygate_sources([tmp_path / "missing.py"]) == []
