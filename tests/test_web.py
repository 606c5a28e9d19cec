"""The browser runtime's checks can fail: a model onnxruntime-web refuses fails compatibility with the runtime's
words, a slowed model fails its web latency budget, a larger one its download budget, while a small model passes
them all; without a browser a config with web variants fails in one line, and one without never starts a browser."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tinygate import browser, latency

pytestmark = pytest.mark.slow

if browser.missing():  # CI installs the browser (.ci/run): there, a missing one is a failure, not a skip
    pytestmark = [pytestmark, pytest.mark.skipif(not os.environ.get("CI"), reason=browser.missing())]


def conv_chain(path, depth: int, opset: int = 18, ir: int = 9) -> None:
    """An ONNX model of `depth` 3x3 convolutions, 8 channels on 32x32, with random (incompressible) weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(depth)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        inits.append(numpy_helper.from_array((rng.normal(size=(8, 8, 3, 3)) / 8).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"h{i}" if i < depth - 1 else "y"], pads=[1, 1, 1, 1]))
        x = f"h{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 32, 32])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.save(model, str(path))


def config(tmp_path, models: dict[str, dict]) -> str:
    np.savez(tmp_path / "eval.npz", inputs=np.random.default_rng(0).random((4, 8, 32, 32), dtype=np.float32))
    text = f'[machines.here]\ncpu_model = "{latency.cpu_model()}"\n'
    for name, spec in models.items():
        conv_chain(tmp_path / f"{name}.onnx", spec["depth"], **spec.get("onnx", {}))
        text += f"""
[models.{name}]
onnx = "{name}.onnx"
task = "fidelity"
input = {{ name = "x", shape = [1, 8, 32, 32] }}
output = {{ name = "y" }}
eval = {{ npz = "eval.npz" }}

[models.{name}.variants.float]
steps = []
{spec.get("runtime", 'runtime = "web"')}
machine = "here"
budgets = {spec["budgets"]}
"""
    return text


BUDGETS = '{ max_web_p50_ms = 0.7, max_web_p95_ms = 5, max_web_load_ms = LOAD, max_download_s = { slow_3g = 1.0 } }'


def test_a_small_model_passes_and_a_slowed_larger_one_fails_web_latency_and_download(tmp_path, run_gate):
    """One convolution (2 KB) runs in about 0.15 ms in the page and downloads on slow 3G in 0.45 s; forty of them
    (92 KB) take about 2.4 ms and 2.1 s: over both budgets, each failing in its own test."""
    (tmp_path / "gate.toml").write_text(config(tmp_path, {
        "small": {"depth": 1, "budgets": BUDGETS.replace("LOAD", "5000")},
        "slowed": {"depth": 40, "budgets": BUDGETS.replace("LOAD", "0.001")}}))  # no session is created that fast
    run = run_gate(tmp_path / "gate.toml", "-m", "web", "--gate-plots")
    assert run.returncode == 1, run.output
    failed = {line.split("::")[1].split(" ")[0] for line in run.lines("FAILED model_tests/")}
    assert failed == {"test_web_latency[slowed-float]", "test_download_time[slowed-float]"}, run.output
    line = run.line("slowed-float: median latency in the browser")  # every missed budget, in one line
    assert "is above the limit 0.7 ms" in line and "session creation in the browser" in line
    results = json.loads((run.reports / "results.json").read_text())
    small, slowed = results["figures"]["small-float"], results["figures"]["slowed-float"]
    assert small["web_p50_ms"] < 0.7 < slowed["web_p50_ms"]
    checks = {(c["model"], c["check"]): c for c in results["checks"]}
    download = checks[("slowed", "download_s_slow_3g")]
    assert download["verdict"] == "fail" and "measured in Chromium under emulation" in download["note"]
    measured = slowed["download_measured_s"]["slow_3g"]
    assert abs(measured - slowed["download_s"]["slow_3g"]) < 0.25 * slowed["download_s"]["slow_3g"]  # emulation agrees
    summary = (run.reports / "summary.md").read_text()
    assert "## Download time per network profile (s)" in summary and (run.reports / "download_time.png").is_file()


def test_a_model_the_web_runtime_refuses_fails_compatibility_with_its_words(tmp_path, run_gate):
    """Opset 27: Python's ONNX Runtime 1.32 runs it, onnxruntime-web 1.30 refuses it. The failure is the web
    runtime's own message, naming the opset, in one line; not a skip."""
    (tmp_path / "gate.toml").write_text(config(tmp_path, {"future": {"depth": 1, "onnx": {"opset": 27, "ir": 11},
                                                                     "budgets": "{}"}}))
    run = run_gate(tmp_path / "gate.toml", "-m", "web", "-k", "compatibility")
    assert run.returncode == 1, run.output
    assert run.lines("FAILED model_tests/test_web.py::test_web_compatibility[future-float]")
    line = run.line("onnxruntime-web refuses the model")
    assert "Opset 27" in line and "future.onnx" in line and "/mnt/" not in line


def test_without_a_browser_web_variants_fail_in_one_line_and_other_configs_never_need_one(tmp_path, run_gate):
    (tmp_path / "gate.toml").write_text(config(tmp_path, {"small": {"depth": 1, "budgets": "{}"}}))
    run = run_gate(tmp_path / "gate.toml", "-m", "web", "-k", "compatibility",
                   env={"TINYGATE_CHROMIUM": str(tmp_path / "no-such-browser")})
    assert run.returncode == 1, run.output
    line = run.line("the web runtime needs a browser")
    assert "no-such-browser is not a file" in line and "tinygate web-setup" in line
    (tmp_path / "gate.toml").write_text(config(tmp_path, {"small": {"depth": 1, "runtime": "", "budgets": "{}"}}))
    run = run_gate(tmp_path / "gate.toml", "-m", "not latency",
                   env={"TINYGATE_CHROMIUM": str(tmp_path / "no-such-browser")})
    assert run.returncode == 0, run.output


NOISY = """
import numpy as np
import tinygate.browser

run_many = tinygate.browser.Browser.run_many  # what run and the evaluation call


def noisy(self, *args, **kwargs):
    return [[out + np.float32(0.01) * np.abs(out).max() for out in outs] for outs in run_many(self, *args, **kwargs)]


tinygate.browser.Browser.run_many = noisy
"""


def test_web_outputs_that_differ_from_python_onnxruntime_fail_and_are_listed(tmp_path, run_gate):
    """Outputs 1% of their range off in the browser (a plugin adds it): the web-vs-Python check fails, naming the
    output and how far it is."""
    (tmp_path / "noisy.py").write_text(NOISY)
    (tmp_path / "gate.toml").write_text(config(tmp_path, {"small": {"depth": 1, "budgets": "{}"}}))
    run = run_gate(tmp_path / "gate.toml", "-k", "matches_onnxruntime", "-p", "noisy",
                   env={"PYTHONPATH": str(tmp_path)})
    assert run.returncode == 1, run.output
    line = run.line("small-float: web_vs_onnxruntime_sqnr_db")
    assert "is not >= 60 dB" in line
    checks = json.loads((run.reports / "results.json").read_text())["checks"]
    (check,) = [c for c in checks if c["check"] == "web_vs_onnxruntime_sqnr_db"]
    assert check["note"].startswith("outputs differing from Python's ONNX Runtime: y ")


def forever(path, after_the_first: bool = False) -> None:
    """A model whose Loop runs 10^15 times: what a hostile file does to a runtime without a time limit. With
    `after_the_first`, max(x) * 10^15 times: instant on an input of zeros, endless on one of ones."""
    import onnx
    from onnx import TensorProto, helper

    def tensor(name):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 8, 32, 32])
    body = helper.make_graph([helper.make_node("Identity", ["cond"], ["cond_out"]),
                              helper.make_node("Add", ["acc", "acc"], ["acc_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond", TensorProto.BOOL, []), tensor("acc")],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), tensor("acc_out")])
    nodes = [helper.make_node("Loop", ["n", "yes", "x"], ["y"], body=body)]
    consts = [helper.make_tensor("yes", TensorProto.BOOL, [], [True])]
    if after_the_first:
        nodes[:0] = [helper.make_node("ReduceMax", ["x"], ["top"], keepdims=0),
                     helper.make_node("Mul", ["top", "big"], ["trips"]),
                     helper.make_node("Cast", ["trips"], ["n"], to=TensorProto.INT64)]
        consts.append(helper.make_tensor("big", TensorProto.FLOAT, [], [1e15]))
    else:
        consts.append(helper.make_tensor("n", TensorProto.INT64, [], [10**15]))
    graph = helper.make_graph(nodes, "forever", [tensor("x")], [tensor("y")], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))


def test_a_model_that_never_ends_in_the_browser_is_stopped_at_the_call_limit(tmp_path, run_gate):
    """The looping model fails naming the limit; the model after it gets a fresh browser and passes."""
    (tmp_path / "gate.toml").write_text(config(tmp_path, {"forever": {"depth": 1, "budgets": "{}"},
                                                           "small": {"depth": 1, "budgets": "{}"}}))
    forever(tmp_path / "forever.onnx")
    run = run_gate(tmp_path / "gate.toml", "-k", "matches_onnxruntime", "--gate-max-call-seconds=3")
    assert run.returncode == 1, run.output
    failed = {line.split("::")[1].split(" ")[0] for line in run.lines("FAILED model_tests/")}
    assert failed == {"test_web_matches_onnxruntime[forever-float]"}, run.output
    line = run.line("ran past 3 s in the browser and was stopped (--gate-max-call-seconds)")
    assert "forever.onnx: ort-web-wasm" in line


def test_a_model_that_never_ends_on_a_later_input_is_stopped_at_the_limit_of_one_call(tmp_path, run_gate):
    """The browser takes the evaluation inputs in chunks, a page call each; the limit holds for each inference: a model
    instant on the first input and endless on the second is stopped 3 s into the second, not 30."""
    (tmp_path / "gate.toml").write_text(config(tmp_path, {"later": {"depth": 1, "budgets": "{}"}}))
    np.savez(tmp_path / "eval.npz", inputs=np.stack([np.zeros((8, 32, 32), np.float32)] + [np.ones((8, 32, 32),
                                                                                                   np.float32)] * 3))
    forever(tmp_path / "later.onnx", after_the_first=True)
    run = run_gate(tmp_path / "gate.toml", "-k", "matches_onnxruntime", "--gate-max-call-seconds=3", "--durations=1")
    assert run.returncode == 1, run.output
    assert run.line("ran past 3 s in the browser and was stopped (--gate-max-call-seconds)")
    took = float(run.line("s call     model_tests/test_web.py::test_web_matches_onnxruntime").split("s")[0])
    assert took < 20, run.output


def test_a_browser_that_fails_to_start_for_one_thread_count_does_not_refuse_the_other(monkeypatch):
    """Evaluation and timing keep a browser each (WebAssembly threads are fixed per page): the evaluation's failing
    to start is said on every evaluation, and timing still gets its one-thread browser; each is tried once."""
    from tinygate.errors import GateError

    starts: list[int] = []

    class Fake:
        alive = True

        def __init__(self, threads=1):
            self.threads = threads

        def __enter__(self):
            starts.append(self.threads)
            if self.threads > 1:
                raise GateError("chromium", browser.BACKEND, "the browser did not start: no threads here")
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(browser, "Browser", Fake)
    monkeypatch.setattr(browser, "_shared", {})
    monkeypatch.setattr(browser, "_failed", {})
    for _ in range(2):
        with pytest.raises(GateError, match="no threads here"):
            browser.shared(2)
        assert browser.shared(1).threads == 1
    assert starts == [2, 1]
