"""Latency of every variant on this machine (pytest-benchmark), its speedup over a reference variant, and
peak memory growth. One benchmark group per model, so pytest-benchmark's table compares its variants."""

import numpy as np
import pytest

from tinygate import latency
from tinygate.artifacts import runner
from tinygate.checks import not_measured
from tinygate.errors import GateError
from tinygate.pytest_plugin import measured, unmeasurable

__all__ = ["test_latency", "test_speedup"]


@pytest.mark.latency
def test_latency(request, timed_runner, benchmark, variant, variant_run, gate_config, gate_threads, gate_recorder,
                 pytestconfig):
    run, xs = timed_runner
    benchmark.group = variant.model
    benchmark.extra_info.update(variant=variant.name, backend=variant.backend, threads=gate_threads)
    rounds = pytestconfig.getoption("--gate-latency-rounds")
    before = latency.rss_mb()
    benchmark.pedantic(run, args=xs, rounds=rounds, warmup_rounds=5, iterations=1)
    if benchmark.stats is None and not pytestconfig.getoption("benchmark_disable"):
        # pytest-benchmark turns itself off under pytest-xdist; this test holds the machine alone there
        # (the plugin's machine lock), so it is timed the same way by hand rather than not at all.
        times = latency.timings(run, xs, rounds, warmup=5)
    elif benchmark.stats is None:  # --benchmark-disable: the user asked for no timing
        keys = [k for k in ("max_p50_ms", "max_p95_ms", "max_memory_growth_mb") if k in variant.budgets]
        reason = f"{variant.id}: timing is disabled (--benchmark-disable)"
        gate_recorder.checks.extend(not_measured(variant_run, k, reason) for k in keys)
        if keys:
            pytest.fail(f"{variant.id}: latency budgets set, but timing is disabled (--benchmark-disable): "
                        f"{', '.join(keys)} not measured", pytrace=False)
        pytest.skip(reason)
    else:
        times = np.asarray(benchmark.stats.stats.data)
    growth = latency.rss_mb() - before
    times_ms = times * 1000
    p50, p95 = float(np.percentile(times_ms, 50)), float(np.percentile(times_ms, 95))
    gate_recorder.figure(variant.id, p50_ms=p50, p95_ms=p95, threads=gate_threads, memory_growth_mb=growth)
    judged = []  # every latency budget is judged and recorded before the test fails on any of them
    if "max_memory_growth_mb" in variant.budgets:
        judged.append(variant_run.judge_value("max_memory_growth_mb", growth,
                                              note="rise of resident memory across the timed calls"))
    absolute = [k for k in ("max_p50_ms", "max_p95_ms") if k in variant.budgets]
    elsewhere = ""
    if absolute and not latency.matches(profile := gate_config.machines[variant.machine]):
        elsewhere = (f"{variant.id}: {', '.join(absolute)} hold on machine profile {variant.machine!r} "
                     f"({profile['cpu_model']}); this machine is {latency.cpu_model()!r}")
    elif absolute:
        judged += [variant_run.judge_value(key, value, note=f"{len(times_ms)} rounds, {gate_threads} thread(s)")
                   for key, value in (("max_p50_ms", p50), ("max_p95_ms", p95)) if key in variant.budgets]
    bad = [c.reason for c in judged if not c.passed]
    if bad:
        pytest.fail("; ".join(bad), pytrace=False)
    if elsewhere:
        unmeasurable(request, variant_run, absolute, elsewhere)


@pytest.mark.latency
@pytest.mark.budget("min_speedup")
def test_speedup(timed_runner, variant, gate, gate_threads, gate_verdict, pytestconfig):
    """Times the reference variant and this one alternately in this process, so both see the same machine."""
    run, xs = timed_runner
    reference = gate.config.models[variant.model].variants[variant.speedup_reference]
    ref_art = measured(gate.variant(reference).artifact)
    try:
        ref_run = runner(ref_art, gate_threads)
    except GateError as exc:
        failure = f"{variant.id}: speedup reference {reference.id}: {exc}"
        ref_run = None
    if ref_run is None:
        pytest.fail(failure, pytrace=False)
    ref_times, times = latency.interleaved(lambda: ref_run(*xs), lambda: run(*xs),
                                           rounds=pytestconfig.getoption("--gate-latency-rounds"), warmup=5)
    speedup = float(np.median(ref_times) / np.median(times))
    gate_verdict("min_speedup", speedup, note=f"median {1000 * np.median(times):.3g} ms vs {reference.name} "
                                              f"{1000 * np.median(ref_times):.3g} ms, {gate_threads} thread(s)")
