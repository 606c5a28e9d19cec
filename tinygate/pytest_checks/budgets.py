"""Size, quality, fidelity, quantized-weight and Core ML spec checks: one test per check, each judged by the
library (tinygate.checks) for every variant that sets the budget."""

import pytest

from tinygate.budgets import QUANTIZING_STEPS

size, quality, spec = pytest.mark.size, pytest.mark.quality, pytest.mark.spec
budget = pytest.mark.budget


@size
@budget("max_size_kb")
def test_size_budget(gate_verdict):
    """Bytes on disk (1 KB = 1,000 bytes; a package counts its folder)."""
    gate_verdict("max_size_kb")


@size
@budget("max_size_ratio")
def test_size_ratio_to_float(gate_verdict):
    gate_verdict("max_size_ratio")


@size
@budget("max_transfer_kb")
def test_transfer_size(gate_verdict):
    """gzip -9 of a file, a deflated zip of a package's files."""
    gate_verdict("max_transfer_kb")


@quality
@budget("min_psnr_db")
def test_psnr_floor(gate_verdict):
    gate_verdict("min_psnr_db")


@quality
@budget("min_psnr_p5_db")
def test_psnr_worst_case_floor(gate_verdict):
    gate_verdict("min_psnr_p5_db")


@quality
@budget("min_ssim")
def test_ssim_floor(gate_verdict):
    gate_verdict("min_ssim")


@quality
@budget("max_psnr_drop_db")
def test_psnr_drop_vs_float(gate_verdict):
    gate_verdict("max_psnr_drop_db")


@quality
@budget("min_accuracy_pct")
def test_accuracy_floor(gate_verdict):
    gate_verdict("min_accuracy_pct")


@quality
@budget("max_accuracy_drop_pct")
def test_accuracy_drop_vs_float(gate_verdict):
    gate_verdict("max_accuracy_drop_pct")


@quality
@budget("min_top1_agreement_pct")
def test_top1_agreement_with_float(gate_verdict):
    gate_verdict("min_top1_agreement_pct")


@quality
@budget("min_output_sqnr_db")
def test_output_sqnr_floor(gate_verdict):
    """Fidelity to the float model on every output; the worst output decides and is named."""
    gate_verdict("min_output_sqnr_db")


@quality
@budget("max_output_abs_diff")
def test_output_abs_diff_limit(gate_verdict):
    gate_verdict("max_output_abs_diff")


@quality
@budget("min_output_cosine")
def test_output_cosine_floor(gate_verdict):
    gate_verdict("min_output_cosine")


@quality
@budget("min_output_top1_agreement_pct")
def test_output_top1_agreement_floor(gate_verdict):
    gate_verdict("min_output_top1_agreement_pct")


@pytest.mark.quantization
@pytest.mark.with_step(*QUANTIZING_STEPS)
def test_quantized_weights_within_bound(gate_verdict):
    """Quantized weights read back from the artifact stay within their bound of the float weights."""
    gate_verdict("weight_error_vs_bound")


@pytest.mark.quantization
@pytest.mark.with_step(*QUANTIZING_STEPS)
def test_quantized_weight_sqnr_floor(gate_verdict):
    """The worst quantized tensor's SQNR against its float weight (min_weight_sqnr_db, or the default floor)."""
    gate_verdict("min_weight_sqnr_db")


@spec
@pytest.mark.artifact_kind("mlpackage")
def test_coreml_loads_as_mlprogram(gate_verdict):
    gate_verdict("coreml_program")


@spec
@pytest.mark.artifact_kind("mlpackage")
def test_coreml_inputs_match_float(gate_verdict):
    gate_verdict("coreml_inputs")


@spec
@pytest.mark.artifact_kind("mlpackage")
def test_coreml_outputs_match_float(gate_verdict):
    gate_verdict("coreml_outputs")


@spec
@pytest.mark.artifact_kind("mlpackage")
def test_coreml_compute_precision(gate_verdict):
    gate_verdict("coreml_precision")


@spec
@pytest.mark.artifact_kind("mlpackage")
def test_coreml_deployment_target(gate_verdict):
    gate_verdict("coreml_target")


__all__ = [name for name in dir() if name.startswith("test_")]
