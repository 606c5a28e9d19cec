"""Size, quality, fidelity, quantized-weight and Core ML spec checks: one test per check, each judged by the
library (tinygate.checks) for every variant it applies to. Each test is made by `_check`: the test's name,
the check it judges, and the markers that select it and pick its variants."""

import pytest

from tinygate.budgets import BUDGETS, QUANTIZING_STEPS
from tinygate.checks import SPEC_CHECKS, came_int8


def _check(key: str, *marks):
    """A test that judges one check of the variant under test (tinygate.gate.VariantRun.check)."""
    def test(gate_verdict):
        gate_verdict(key)
    test.__doc__ = (BUDGETS[key].label if key in BUDGETS else SPEC_CHECKS[key].__doc__) + f" ({key})"
    for mark in marks:
        test = mark(test)
    return test


def _budget(key: str, kind):
    """A budget check: it runs for every variant that sets the budget key."""
    return _check(key, kind, pytest.mark.budget(key))


size, quality = pytest.mark.size, pytest.mark.quality
quantized = (pytest.mark.quantization, pytest.mark.with_step(*QUANTIZING_STEPS))
coreml = (pytest.mark.spec, pytest.mark.artifact_kind("mlpackage"))

test_size_budget = _budget("max_size_kb", size)
test_size_ratio_to_float = _budget("max_size_ratio", size)
test_transfer_size = _budget("max_transfer_kb", size)
test_psnr_floor = _budget("min_psnr_db", quality)
test_psnr_worst_case_floor = _budget("min_psnr_p5_db", quality)
test_ssim_floor = _budget("min_ssim", quality)
test_psnr_drop_vs_float = _budget("max_psnr_drop_db", quality)
test_accuracy_floor = _budget("min_accuracy_pct", quality)
test_accuracy_drop_vs_float = _budget("max_accuracy_drop_pct", quality)
test_top1_agreement_with_float = _budget("min_top1_agreement_pct", quality)
test_output_sqnr_floor = _budget("min_output_sqnr_db", quality)
test_output_abs_diff_limit = _budget("max_output_abs_diff", quality)
test_output_cosine_floor = _budget("min_output_cosine", quality)
test_output_top1_agreement_floor = _budget("min_output_top1_agreement_pct", quality)
# Every quantized variant gets both, the SQNR floor by default when min_weight_sqnr_db is not set.
test_quantized_weights_within_bound = _check("weight_error_vs_bound", *quantized)
test_quantized_weight_sqnr_floor = _check("min_weight_sqnr_db", *quantized)
# A model given already int8 has no float weights: its own scales are read instead.
test_existing_int8_scales_use_their_range = _check("existing_scales_use_range", pytest.mark.quantization,
                                                   pytest.mark.select(lambda v, m: came_int8(v, m)))
test_coreml_loads_as_mlprogram = _check("coreml_program", *coreml)
test_coreml_inputs_match_float = _check("coreml_inputs", *coreml)
test_coreml_outputs_match_float = _check("coreml_outputs", *coreml)
test_coreml_compute_precision = _check("coreml_precision", *coreml)
test_coreml_deployment_target = _check("coreml_target", *coreml)

__all__ = [name for name in dir() if name.startswith("test_")]
