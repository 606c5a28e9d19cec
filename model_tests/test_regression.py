"""Regression against the accepted baseline (reports/baseline): size, paired quality, drift, latency."""

from tinygate.pytest_checks.regression import (  # noqa: F401
    test_fidelity_vs_baseline,
    test_float_outputs_vs_baseline,
    test_latency_absolute_vs_baseline,
    test_latency_vs_baseline,
    test_no_baseline_variant_is_missing,
    test_quality_drift_vs_release_line_start,
    test_quality_vs_baseline,
    test_size_vs_baseline,
)
