"""Core ML packages, checked from their spec on any OS: they load, match the float model's interface, and
declare the configured compute precision and deployment target."""

from tinygate.pytest_checks.budgets import (  # noqa: F401
    test_coreml_interface_matches_float,
    test_coreml_loads_as_mlprogram,
    test_coreml_precision_and_target,
)
