"""Quantized weights read back from every shipped artifact, checked against the float weights they came from (or,
for a model given already int8, its own scales)."""

from tinygate.pytest_checks.budgets import (  # noqa: F401
    test_existing_int8_scales_use_their_range,
    test_quantized_weight_sqnr_floor,
    test_quantized_weights_within_bound,
)
