"""Core ML packages, checked from their spec on any OS: they load, match the float model's interface, and
declare the configured compute precision and deployment target."""

from tinygate.pytest_checks.budgets import (  # noqa: F401
    test_coreml_compute_precision,
    test_coreml_deployment_target,
    test_coreml_inputs_match_float,
    test_coreml_loads_as_mlprogram,
    test_coreml_outputs_match_float,
)
