"""Latency of every variant on this machine (pytest-benchmark), speedup over a reference, memory growth."""

from tinygate.pytest_checks.latency import test_latency, test_speedup  # noqa: F401
