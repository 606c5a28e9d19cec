"""Latency of every variant on this machine (pytest-benchmark), speedup over a reference, memory growth."""

from tinygate.pytest_checks.latency import (  # noqa: F401
    test_latency,
    test_latency_p95_limit,
    test_memory_growth_limit,
    test_speedup,
)
