"""Fidelity budgets: every output of the variant against the float model's on the same evaluation inputs, for
models with no labels or targets; the worst output decides and is named."""

from tinygate.pytest_checks.budgets import (  # noqa: F401
    test_output_abs_diff_limit,
    test_output_cosine_floor,
    test_output_sqnr_floor,
    test_output_top1_agreement_floor,
)
