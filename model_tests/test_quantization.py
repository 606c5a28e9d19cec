"""Quantized weights read back from every shipped artifact, checked against the float weights they came from."""

from tinygate.pytest_checks.budgets import test_quantized_weights_within_bound  # noqa: F401
