"""Fidelity budgets: every output of the variant against the float model's on the same evaluation inputs,
for models with no labels or targets; the worst output decides and is named."""

import pytest

from tinygate.artifacts import backend_name
from tinygate.budgets import BUDGETS
from tinygate.fidelity import worst

pytestmark = pytest.mark.quality


def _check(key, figure, output_fidelity, gate_check, variant):
    """Check the output that does worst on this figure; the note lists the others."""
    bad = worst(output_fidelity, figure, BUDGETS[key].kind)
    others = ", ".join(f"{r.output} {getattr(r, figure):.4g}" for r in output_fidelity if r is not bad)
    gate_check(key, getattr(bad, figure), note=f"worst output {bad.output!r}" + (f"; {others}" if others else ""),
               measured_on=backend_name(variant.kind))


@pytest.mark.budget("min_output_sqnr_db")
def test_output_sqnr_floor(output_fidelity, gate_check, variant):
    _check("min_output_sqnr_db", "sqnr_db", output_fidelity, gate_check, variant)


@pytest.mark.budget("max_output_abs_diff")
def test_output_abs_diff_limit(output_fidelity, gate_check, variant):
    _check("max_output_abs_diff", "max_abs_diff", output_fidelity, gate_check, variant)


@pytest.mark.budget("min_output_cosine")
def test_output_cosine_floor(output_fidelity, gate_check, variant):
    _check("min_output_cosine", "cosine", output_fidelity, gate_check, variant)


@pytest.mark.budget("min_output_top1_agreement_pct")
def test_output_top1_agreement_floor(output_fidelity, gate_check, variant):
    _check("min_output_top1_agreement_pct", "top1_agreement_pct", output_fidelity, gate_check, variant)
