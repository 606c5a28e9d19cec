"""Quality budgets: against the ground truth, and against the float model on the same samples."""

from tinygate.pytest_checks.budgets import (  # noqa: F401
    test_accuracy_drop_vs_float,
    test_accuracy_floor,
    test_psnr_drop_vs_float,
    test_psnr_floor,
    test_psnr_worst_case_floor,
    test_ssim_floor,
    test_top1_agreement_with_float,
)
