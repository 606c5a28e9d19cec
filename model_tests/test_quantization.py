"""Quantized weights read back from every shipped artifact, checked against the float weights they came from."""

import pytest

from tinygate import quant_artifacts
from tinygate.budgets import QUANTIZING_STEPS, default_weight_sqnr_db

pytestmark = [pytest.mark.quantization, pytest.mark.with_step(*QUANTIZING_STEPS)]


def test_quantized_weights_within_bound(artifact, float_reference_weights, variant, gate_check, gate_recorder):
    """Every quantized tensor dequantizes to within its bound of the float weight (S/2 for int8, the nearest
    entry for a look-up table), and the worst tensor's SQNR stays above the floor."""
    tensors = quant_artifacts.read(artifact, list(float_reference_weights))
    if not tensors:
        pytest.fail(f"{variant.id}: {artifact.path} holds no quantized weight that matches a float weight",
                    pytrace=False)
    checks = [quant_artifacts.check_tensor(t, float_reference_weights[t.name]) for t in tensors]
    worst = max(checks, key=lambda c: c.max_error / c.bound if c.bound > 0 else float("inf"))
    ratio = worst.max_error / worst.bound if worst.bound > 0 else float("inf")
    gate_recorder.record(variant.model, variant.name, "weight_error_vs_bound", ratio, 1.0, "x bound",
                         worst.within_bound, variant.backend, f"worst {worst.stored}", "<=")
    if not worst.within_bound:
        pytest.fail(f"{variant.id}: quantized weight {worst.stored} (float {worst.name}) is off by "
                    f"{worst.max_error:.4g} at {worst.where}, above its bound {worst.bound:.4g} "
                    f"(scale {worst.scale:.4g}); SQNR {worst.sqnr_db:.1f} dB", pytrace=False)
    step = next(s for s in variant.steps if s.name in QUANTIZING_STEPS)
    lowest = min(checks, key=lambda c: c.sqnr_db)
    floor = variant.budgets.get("min_weight_sqnr_db", default_weight_sqnr_db(step.name, step.params))
    gate_check("min_weight_sqnr_db", lowest.sqnr_db, note=f"worst tensor {lowest.stored}", budget=floor)
