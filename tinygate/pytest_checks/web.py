"""The browser runtime: every variant marked `runtime = "web"` loads in onnxruntime-web (WebAssembly) in headless
Chromium and is timed in the page; every variant with `max_download_s` has its download time per network profile
computed from its transfer size, and measured through Chrome's network emulation where it runs in the browser."""

import numpy as np
import pytest

from tinygate import browser, pipeline
from tinygate.pytest_plugin import measured

__all__ = ["test_web_compatibility", "test_web_matches_onnxruntime", "test_web_latency", "test_download_time"]

MEASURE_UP_TO_S = 60.0  # a download computed to take longer is not also waited for under emulation
WEB_VS_PYTHON_SQNR_DB = 60.0  # float outputs agree to about 1e-6 (over 100 dB), int8 ones bit for bit


@pytest.mark.select(lambda v, m: v.runtime == "web")
def test_web_compatibility(variant, variant_run, gate_recorder):
    """The web runtime creates a session from the artifact; a model it refuses fails with the runtime's words (the
    op or type it lacks), never a skip."""
    art = measured(variant_run.artifact)
    web = measured(lambda: browser.shared(variant_run.gate.threads))
    info = measured(lambda: web.load(art.path))
    gate_recorder.figure(variant.id, web_load_ms=info["create_ms"], ort_web=web.version)


@pytest.mark.quality
@pytest.mark.select(lambda v, m: v.runtime == "web")
def test_web_matches_onnxruntime(variant, variant_run, gate, gate_check):
    """The browser computes what ONNX Runtime in Python computes from the same file, on every evaluation input: each
    output's SQNR of the web outputs against Python's at least WEB_VS_PYTHON_SQNR_DB; the outputs that differ more
    are listed (a kernel of the WebAssembly build that rounds otherwise, an op it runs in another precision)."""
    from tinygate import evaluate

    art = measured(variant_run.artifact)
    native = browser.native_artifact(art)
    results = measured(lambda: evaluate.fidelity(art, native, variant_run.model, variant_run.evaluation(), gate.cache,
                                                 gate.threads))
    worst = min(results, key=lambda r: r.sqnr_db)
    differ = [f"{r.output} {r.sqnr_db:.3g} dB (largest difference {r.max_abs_diff:.3g})" for r in results
              if not r.sqnr_db >= WEB_VS_PYTHON_SQNR_DB]
    note = ("outputs differing from Python's ONNX Runtime: " + "; ".join(differ)) if differ else \
        f"every output within {WEB_VS_PYTHON_SQNR_DB:g} dB of Python's ONNX Runtime"
    gate_check("web_vs_onnxruntime_sqnr_db", worst.sqnr_db, ">=", WEB_VS_PYTHON_SQNR_DB, unit="dB", note=note)


@pytest.mark.latency
@pytest.mark.select(lambda v, m: v.runtime == "web")
def test_web_latency(request, variant, variant_run, gate_recorder, gate_verdict, pytestconfig):
    """Session creation, p50 and p95 of inference, timed in the page (performance.now around session.run, after
    the Python latency checks' five warm-up calls and --gate-latency-rounds rounds); max_web_load_ms,
    max_web_p50_ms and max_web_p95_ms where set (absolute: on the variant's machine profile)."""
    from tinygate.pytest_checks.latency import _judge_absolute

    art = measured(variant_run.artifact)
    web = measured(lambda: browser.shared(variant_run.gate.threads))
    info = measured(lambda: web.load(art.path))
    xs = pipeline.example_inputs(variant_run.model)
    rounds = pytestconfig.getoption("--gate-latency-rounds")
    times = measured(lambda: web.times_ms(art.path, xs, variant_run.model.input_names, warmup=5, rounds=rounds))
    figures = {"web_load_ms": info["create_ms"], "web_p50_ms": float(np.percentile(times, 50)),
               "web_p95_ms": float(np.percentile(times, 95))}
    gate_recorder.figure(variant.id, **figures)
    note = f"{len(times)} rounds in the page, onnxruntime-web {web.version}, {web.threads} thread(s)"
    for key in ("max_web_load_ms", "max_web_p50_ms", "max_web_p95_ms"):
        if key in variant.budgets:
            _judge_absolute(request, variant_run, gate_verdict, key, figures[key.removeprefix("max_")], note)


@pytest.mark.size
@pytest.mark.select(lambda v, m: bool(v.max_download_s))
def test_download_time(variant, variant_run, gate, gate_check, gate_recorder):
    """Seconds to download the artifact on each budgeted network profile: one round trip plus its transfer size
    (gzip) at the profile's bandwidth; for a web variant also measured in Chromium under network emulation (the
    larger of the two is held to the budget)."""
    art = measured(variant_run.artifact)
    took_s = {}
    for name, limit in variant.max_download_s.items():
        network = gate.config.networks[name]
        seconds = network.seconds(art.transfer_bytes())
        note = f"computed: {art.transfer_bytes() / 1000:.1f} KB on the wire at {network.kbit_s:g} kbit/s, " \
               f"{network.latency_ms:g} ms"
        if variant.runtime == "web" and seconds <= MEASURE_UP_TO_S:
            web = measured(lambda: browser.shared(variant_run.gate.threads))
            took_s[name], wire = measured(lambda w=web, n=network: w.download_s(art.path, n))
            gate_recorder.figure(variant.id, download_measured_s=took_s)
            note += f"; measured in Chromium under emulation: {took_s[name]:.2f} s for {wire / 1000:.1f} KB"
            seconds = max(seconds, took_s[name])
        gate_check(f"download_s_{name}", seconds, "<=", limit, unit="s", note=note)
