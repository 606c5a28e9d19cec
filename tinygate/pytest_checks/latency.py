"""Latency of every variant on this machine (pytest-benchmark), its speedup over a reference variant, and
peak memory growth. One benchmark group per model, so pytest-benchmark's table compares its variants."""

import numpy as np
import pytest

from tinygate import latency
from tinygate.artifacts import runner
from tinygate.checks import not_measured
from tinygate.errors import GateError
from tinygate.pytest_plugin import measured, unmeasurable
from tinygate.steps.onnx_steps import why_slow

__all__ = ["test_latency", "test_latency_p95_limit", "test_memory_growth_limit", "test_speedup"]

def _timing(variant_run, timed_runner, rounds: int, found: tuple | None = None,
            warmup: int = 5) -> tuple[np.ndarray, float]:
    """Per-call times (s) and the rise of resident memory (MB) across them, measured once per process: the
    timings test_latency took with pytest-benchmark, or the same warm-up and rounds timed by hand."""
    def by_hand():
        run, xs = timed_runner
        before = latency.rss_mb()
        times = latency.timings(run, xs, rounds, warmup=warmup)
        return times, latency.rss_mb() - before
    return variant_run.gate.once(("timing", variant_run.variant.id), (lambda: found) if found else by_hand)


FIGURE_SECONDS = 0.3  # how long a variant with no latency budget is timed: its p50 is a figure, not a verdict


TIMING_BUDGETS = {"max_p50_ms", "max_p95_ms", "max_memory_growth_mb"}


def _rounds(variant, run, xs, rounds: int) -> int:
    """--gate-latency-rounds for a variant with a latency budget; else as many as fit in FIGURE_SECONDS (5 at
    least, at most that many), estimated from one call."""
    if TIMING_BUDGETS & set(variant.budgets):
        return rounds
    import time

    start = time.perf_counter()
    run(*xs)
    return min(rounds, max(5, int(FIGURE_SECONDS / max(time.perf_counter() - start, 1e-9))))


def _no_timing(variant_run, key: str) -> None:
    """--benchmark-disable: the user asked for no timing; a latency budget then fails, as it cannot be measured."""
    variant = variant_run.variant
    keys = [key] if key in variant.budgets else []
    reason = f"{variant.id}: timing is disabled (--benchmark-disable)"
    variant_run.gate.recorder.checks.extend(not_measured(variant_run, k, reason) for k in keys)
    if keys:
        pytest.fail(f"{variant.id}: latency budgets set, but timing is disabled (--benchmark-disable): "
                    f"{', '.join(keys)} not measured", pytrace=False)
    pytest.skip(reason)


def _judge_absolute(request, variant_run, gate_verdict, key: str, value: float, note: str) -> None:
    """An absolute limit holds on the variant's machine profile; elsewhere it is not measured."""
    variant, machines = variant_run.variant, variant_run.gate.config.machines
    if not latency.matches(profile := machines[variant.machine]):
        unmeasurable(request, variant_run, [key], f"{variant.id}: {key} holds on machine profile "
                     f"{variant.machine!r} ({latency.describe(profile)}); this machine is "
                     f"{latency.describe(latency.machine_fingerprint())!r}")
    gate_verdict(key, value, note)


NATIVE = pytest.mark.select(lambda v, m: v.runtime != "web")  # a web variant is timed in the page (test_web_latency)


@pytest.mark.latency
@NATIVE
def test_latency(request, timed_runner, benchmark, variant, variant_run, gate_threads, gate_recorder, gate_verdict,
                 pytestconfig):
    """Times the variant with pytest-benchmark (one group per model); holds max_p50_ms where it is set."""
    run, xs = timed_runner
    benchmark.group = variant.model
    benchmark.extra_info.update(variant=variant.name, backend=variant.backend, threads=gate_threads)
    rounds = _rounds(variant, run, xs, pytestconfig.getoption("--gate-latency-rounds"))
    before = latency.rss_mb()
    # a budget's: 5 warm-up calls; a figure's: one more after the fixture's check call and _rounds' estimate
    warmup = 5 if TIMING_BUDGETS & set(variant.budgets) else 1
    benchmark.pedantic(run, args=xs, rounds=rounds, warmup_rounds=warmup, iterations=1)
    if benchmark.stats is None and pytestconfig.getoption("benchmark_disable"):
        _no_timing(variant_run, "max_p50_ms")
    # pytest-benchmark turns itself off under pytest-xdist; this test holds the machine alone there (the plugin's
    # machine lock), so it is timed the same way by hand rather than not at all.
    found = (np.asarray(benchmark.stats.stats.data), latency.rss_mb() - before) if benchmark.stats else None
    times, growth = _timing(variant_run, timed_runner, rounds, found, warmup)
    p50, p95 = (float(np.percentile(times * 1000, q)) for q in (50, 95))
    gate_recorder.figure(variant.id, p50_ms=p50, p95_ms=p95, threads=gate_threads, memory_growth_mb=growth)
    if "max_p50_ms" in variant.budgets:
        _judge_absolute(request, variant_run, gate_verdict, "max_p50_ms", p50,
                        f"{len(times)} rounds, {gate_threads} thread(s)")


@pytest.mark.latency
@pytest.mark.budget("max_p95_ms")
def test_latency_p95_limit(request, timed_runner, variant_run, gate_threads, gate_verdict, pytestconfig):
    if pytestconfig.getoption("benchmark_disable"):
        _no_timing(variant_run, "max_p95_ms")
    times, _ = _timing(variant_run, timed_runner, pytestconfig.getoption("--gate-latency-rounds"))
    _judge_absolute(request, variant_run, gate_verdict, "max_p95_ms", float(np.percentile(times * 1000, 95)),
                    f"{len(times)} rounds, {gate_threads} thread(s)")


@pytest.mark.latency
@pytest.mark.budget("max_memory_growth_mb")
def test_memory_growth_limit(timed_runner, variant_run, gate_verdict, pytestconfig):
    """The rise of resident memory across the timed calls (a leak), not the peak, which never falls."""
    if pytestconfig.getoption("benchmark_disable"):
        _no_timing(variant_run, "max_memory_growth_mb")
    _, growth = _timing(variant_run, timed_runner, pytestconfig.getoption("--gate-latency-rounds"))
    gate_verdict("max_memory_growth_mb", growth, note="rise of resident memory across the timed calls")


@pytest.mark.latency
@pytest.mark.select(lambda v, m: not v.is_float and v.runtime != "web")
def test_speedup(timed_runner, variant, gate, gate_threads, gate_recorder, gate_verdict, pytestconfig):
    """Times the variant and the model it was made from (the float variant, or `speedup_reference`) alternately in
    this process, so both see the same machine, budget or not: the speedup is in every report, a variant clearly
    slower than its float model is flagged in the summary, and `min_speedup` is held where it is set (with the
    full rounds; a figure alone takes 3 to 10)."""
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
    budgeted = "min_speedup" in variant.budgets
    if pytestconfig.getoption("benchmark_disable"):
        _no_timing(gate.variant(variant), "min_speedup")
    slower = 1 / (1 + gate.config.regression.slowdown_pct / 100)
    if budgeted:  # --gate-latency-rounds, or 10 at least when every round so far is 10% clear of the floor on the
        # same side (a sign test's p of 0.001: only a change in the machine midway could move the median across it)
        floor = float(variant.budgets["min_speedup"])

        def settled(ref, new) -> bool:
            speedups = ref / new
            return speedups.min() >= 1.1 * floor or speedups.max() < floor / 1.1
        ref_times, times = latency.interleaved(lambda: ref_run(*xs), lambda: run(*xs),
                                               rounds=pytestconfig.getoption("--gate-latency-rounds"), warmup=5,
                                               enough=settled, least=10)
    else:  # a figure: 3 to 10 rounds, until FIGURE_SECONDS are spent and every round's speedup is on the same side
        # of the slowdown flag's threshold (a model 10x slower is settled in 3 rounds; one near the line gets 10)
        import time

        until = time.perf_counter() + FIGURE_SECONDS

        def enough(ref, new) -> bool:
            speedups = ref / new
            return time.perf_counter() >= until and (speedups.max() < slower or speedups.min() >= slower)
        ref_times, times = latency.interleaved(lambda: ref_run(*xs), lambda: run(*xs), warmup=1, enough=enough,
                                               rounds=max(3, min(10, pytestconfig.getoption("--gate-latency-rounds"))))
    speedup = float(np.median(ref_times) / np.median(times))
    note = (f"median {1000 * np.median(times):.3g} ms vs {reference.name} {1000 * np.median(ref_times):.3g} ms, "
            f"{len(times)} interleaved rounds, {gate_threads} thread(s)")
    gate_recorder.figure(variant.id, speedup=speedup, speedup_reference=reference.name)
    if speedup < slower and np.median(ref_times) >= 1e-3:  # under a millisecond, overhead and the timer decide
        why = why_slow(art.path) if (art := gate.variant(variant).artifact()).kind == "onnx" else None
        gate_recorder.note(f"{variant.id} is slower than {reference.id}, the model it was made from: {speedup:.2f}x "
                           f"({note})" + (f": {why}" if why else "")
                           + ("" if budgeted else "; gate it with min_speedup"))
    if budgeted:
        gate_verdict("min_speedup", speedup, note=note)
