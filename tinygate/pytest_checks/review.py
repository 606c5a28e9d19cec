"""Checks of a pull request judged from its bundle (--gate-bundle; `tinygate judge`): what its gate.toml changes,
and whether its build exported the float model it actually ran. Outside a judged run they are not collected."""

from __future__ import annotations

import pytest

from tinygate.pytest_plugin import measured

__all__ = ["test_config_changes_approved", "test_bundle_float_matches_build"]


@pytest.mark.judge
def test_config_changes_approved(gate):
    """Every change the pull request makes to gate.toml is listed in the reports; one that loosens the gate (a
    loosened budget or threshold, a removed check or variant, an added model) fails until a person approves it
    (--gate-approved: the judge workflow passes it for a pull request carrying the approval label)."""
    from tinygate.checks import FAIL, PASS, Check

    rec = gate.recorder
    blocking = [c for c in gate.review if c.needs_approval]
    for c in gate.review:
        if not c.needs_approval or gate.approved:
            rec.note(f"gate.toml change{' (approved: --gate-approved)' if c.needs_approval else ''}: {c}")
    for c in blocking:
        parts = c.where.split(".")
        if len(parts) == 6 and parts[0] == "models" and parts[2] == "variants" and parts[4] == "budgets":
            model, variant, check = parts[1], parts[3], f"{parts[5]} (gate.toml)"
        else:
            model, variant, check = "gate.toml", c.where, "config change"
        rec.checks.append(Check(model, variant, check, c.what, "approved", "", PASS if gate.approved else FAIL, "-",
                                "approved (--gate-approved)" if gate.approved else "", "==",
                                "" if gate.approved else f"gate.toml {c}: needs a person's approval"))
    if blocking and not gate.approved:
        pytest.fail(f"the pull request changes the gate in {len(blocking)} way(s) that need a person's approval: "
                    + "; ".join(map(str, blocking)), pytrace=False)


@pytest.mark.judge
@pytest.mark.select(lambda v, m: v.is_float)
def test_bundle_float_matches_build(variant, variant_run, gate, gate_recorder):
    """The float model as the judge runs it (a PyTorch model: the bundle's weights in this branch's factory)
    reproduces the outputs the pull request's own code computed at build time, input by input
    (`float_change_sqnr_db`): a pull request that changed the model's code, not only its weights, is judged on
    code that is not its own, so it fails here until that code is on the target branch."""
    from tinygate.evaluate import outputs_all
    from tinygate.fidelity import Accumulator
    from tinygate.regression import mostly_at_least

    built = measured(lambda: gate.bundle.float_outputs(variant.model))
    if built is None:
        pytest.fail(f"{variant.id}: the bundle holds no float outputs for model {variant.model!r}", pytrace=False)
    model = variant_run.model
    ours = measured(lambda: outputs_all(variant_run.float_artifact(), variant_run.evaluation(), gate.threads))
    floor = gate.config.regression.float_change_sqnr_db
    bad = []
    for name, mine in zip(model.output_names, ours, strict=True):
        theirs = built.get(name)
        if theirs is None or theirs.shape != mine.shape:
            bad.append(f"output {name!r}: the build recorded {None if theirs is None else theirs.shape}, the judge "
                       f"computes {mine.shape}")
            continue
        compared = Accumulator(name, model.class_axis)
        compared.add(theirs, mine)  # per input, the build's outputs as the reference
        verdict = mostly_at_least(compared.result().samples_db, floor)
        gate_recorder.figure(variant.id, export_sqnr_db={name: verdict.figure})
        if verdict.regressed:
            bad.append(f"output {name!r}: {verdict.detail}")
    if bad:
        pytest.fail(f"{variant.id}: the bundle's float model, run by this branch's code, does not compute what the "
                    "pull request's build computed (did its model code change? that lands on the target branch "
                    "first): " + "; ".join(bad), pytrace=False)
