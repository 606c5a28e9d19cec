"""Quality budgets: against the ground truth, and against the float model on the same samples."""

import pytest

from tinygate import metrics

pytestmark = pytest.mark.quality


@pytest.mark.budget("min_psnr_db")
def test_psnr_floor(scores, gate_check, quality_attribution):
    gate_check("min_psnr_db", metrics.mean(scores["psnr"]), explain=quality_attribution, measured_on=scores.backend)


@pytest.mark.budget("min_psnr_p5_db")
def test_psnr_worst_case_floor(scores, gate_check, quality_attribution):
    gate_check(
        "min_psnr_p5_db",
        metrics.percentile(scores["psnr"], 5),
        note="5th percentile over the evaluation set",
        explain=quality_attribution,
        measured_on=scores.backend,
    )


@pytest.mark.budget("min_ssim")
def test_ssim_floor(scores, gate_check, quality_attribution):
    gate_check("min_ssim", metrics.mean(scores["ssim"]), explain=quality_attribution, measured_on=scores.backend)


@pytest.mark.budget("max_psnr_drop_db")
def test_psnr_drop_vs_float(scores, float_scores, gate_check, quality_attribution):
    base, mine = metrics.mean(float_scores["psnr"]), metrics.mean(scores["psnr"])
    gate_check(
        "max_psnr_drop_db",
        base - mine,
        note=f"float {base:.3f} dB, this variant {mine:.3f} dB",
        explain=quality_attribution,
        measured_on=scores.backend,
    )


@pytest.mark.budget("min_accuracy_pct")
def test_accuracy_floor(scores, gate_check, quality_attribution):
    gate_check(
        "min_accuracy_pct",
        100.0 * metrics.mean(scores["correct"]),
        explain=quality_attribution,
        measured_on=scores.backend,
    )


@pytest.mark.budget("max_accuracy_drop_pct")
def test_accuracy_drop_vs_float(scores, float_scores, gate_check, quality_attribution):
    base, mine = 100.0 * metrics.mean(float_scores["correct"]), 100.0 * metrics.mean(scores["correct"])
    gate_check(
        "max_accuracy_drop_pct",
        base - mine,
        note=f"float {base:.2f}%, this variant {mine:.2f}%",
        explain=quality_attribution,
        measured_on=scores.backend,
    )


@pytest.mark.budget("min_top1_agreement_pct")
def test_top1_agreement_with_float(scores, float_scores, gate_check, quality_attribution):
    gate_check(
        "min_top1_agreement_pct",
        metrics.agreement_pct(scores["predictions"], float_scores["predictions"]),
        explain=quality_attribution,
        measured_on=scores.backend,
    )
