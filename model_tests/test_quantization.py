"""Quantized weights read back from every shipped artifact, checked against the float weights they came from."""

from tinygate.pytest_checks.budgets import (  # noqa: F401
    test_quantized_weight_sqnr_floor,
    test_quantized_weights_within_bound,
)
