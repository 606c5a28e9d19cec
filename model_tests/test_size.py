"""Size budgets of each variant's deployable artifact: bytes on disk, ratio to float, transfer size."""

from tinygate.pytest_checks.budgets import test_size_budget, test_size_ratio_to_float, test_transfer_size  # noqa: F401
