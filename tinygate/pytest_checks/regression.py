"""Regression against the baseline (the last released state, REPORTS/baseline/): size growth beyond a
percentage and an absolute floor; quality paired on the same evaluation samples, against the baseline
and, as a drift guard, against the first baseline of the release line; latency timed interleaved with the
baseline's own artifact. Thresholds: `[regression]` in gate.toml (tinygate.config.RegressionSettings)."""

import numpy as np
import pytest

from tinygate import regression
from tinygate.artifacts import COREML_RUNTIME, coreml_backend, runner
from tinygate.budgets import FIDELITY
from tinygate.errors import GateError
from tinygate.pytest_plugin import baseline_dir, measured

__all__ = ["test_no_baseline_variant_is_missing", "test_float_outputs_vs_baseline", "test_fidelity_vs_baseline",
           "test_size_vs_baseline", "test_quality_vs_baseline", "test_quality_drift_vs_release_line_start",
           "test_latency_vs_baseline", "test_latency_absolute_vs_baseline"]

regression_ = pytest.mark.regression


def _record(gate_recorder, variant, check, verdict, budget, unit, note, op, measured_on=None):
    """Record the comparison in the report (value, the threshold it is held to) and fail if it regressed, unless
    this run is being accepted as the new baseline (with its reason): then the change is what is accepted, and
    the record says so."""
    replaced = verdict.regressed and gate_recorder.accepting
    gate_recorder.record(variant.model, variant.name, check, verdict.figure, budget, unit,
                         not verdict.regressed or replaced, measured_on or variant.backend,
                         f"accepted over the old baseline: {note}" if replaced else note, op)
    if verdict.regressed and not replaced:
        pytest.fail(f"{variant.id}: regressed against the baseline: {check}: {verdict.detail}", pytrace=False)


@regression_
def test_no_baseline_variant_is_missing(gate_baseline, gate, pytestconfig):
    """A model or variant in the baseline and not in this run's config would escape every comparison: it fails,
    until a baseline without it is accepted (tinygate accept --reason "...")."""
    from tinygate.checks import FAIL, PASS, Check

    config = gate.config
    gone = sorted(set(gate_baseline.doc["variants"]) - {v.id for v in config.variants})
    accepting = pytestconfig.getoption("--gate-accept-baseline")
    for vid in gone:
        old = gate_baseline.doc["variants"][vid]
        why = f"{vid} is in the baseline under {gate_baseline.root} but not in {config.path}"
        gate.recorder.checks.append(Check(
            str(old.get("model", vid)), str(old.get("variant", "")), "present_vs_baseline", None, "present", "",
            PASS if accepting else FAIL, str(old.get("backend", "")),
            "removed: this run becomes the baseline" if accepting else "", "==", "" if accepting else why))
    if gone and not accepting:
        pytest.fail(f"in the baseline, gone from {config.path}: {', '.join(gone)}; a removed or renamed model or "
                    'variant needs a new baseline: tinygate accept --reason "..."', pytrace=False)


def _per_output(gate_recorder, variant, check, verdicts, floor, what) -> None:
    """Record one check per output, then fail naming every output that regressed and by how much."""
    for output, verdict in verdicts:
        replaced = verdict.regressed and gate_recorder.accepting  # see _record
        gate_recorder.record(variant.model, variant.name, f"{check}.{output}", verdict.figure, floor, "dB",
                             not verdict.regressed or replaced, variant.backend,
                             f"accepted over the old baseline: {verdict.detail}" if replaced else verdict.detail, ">=")
    bad = [f"output {output!r}: {verdict.detail}" for output, verdict in verdicts if verdict.regressed]
    if bad and not gate_recorder.accepting:
        pytest.fail(f"{variant.id}: regressed against the baseline: {what}: " + "; ".join(bad), pytrace=False)


@regression_
@pytest.mark.select(lambda v, m: v.is_float)
def test_float_outputs_vs_baseline(variant, variant_run, gate, gate_baseline, variant_baseline, gate_recorder):
    """The float model's outputs against the baseline float model's, input by input: every model, labels or not,
    is guarded (weights retrained, perturbed or partly zeroed, or its code edited, change them); fails when more
    than 5% of the inputs fall under `float_change_sqnr_db`. An identical artifact passes unrun."""
    from tinygate import evaluate
    from tinygate.regression import Verdict, mostly_at_least

    floor = gate.config.regression.float_change_sqnr_db
    today = measured(variant_run.float_artifact)
    if variant_baseline.get("artifact") == today.digest:
        _per_output(gate_recorder, variant, "float_sqnr_vs_baseline",
                    [("*", Verdict(False, float("inf"), f"identical to the baseline's (sha256 {today.digest[:12]})"))],
                    floor, "")
        return
    # a PyTorch baseline as frozen when accepted (its code of that day), else its weights with today's code
    theirs = gate_baseline.traced(variant.id) or measured(lambda: gate_baseline.artifact(variant.id))
    results = measured(lambda: evaluate.fidelity(today, theirs, variant_run.model, variant_run.evaluation(),
                                                 gate.cache, gate.threads))
    verdicts = [(r.output, mostly_at_least(r.samples_db, floor)) for r in results]
    _per_output(gate_recorder, variant, "float_sqnr_vs_baseline", verdicts, floor,
                "the float model's outputs moved away from the baseline float model's (accept a new baseline if "
                "that was meant)")


@regression_
@pytest.mark.select(lambda v, m: not v.is_float and (m.task == "fidelity" or bool(set(FIDELITY) & set(v.budgets))))
def test_fidelity_vs_baseline(variant, variant_run, gate, gate_baseline, variant_baseline, gate_recorder,
                              pytestconfig, request):
    """Each output's per-input SQNR against the float model, paired with the baseline's on the same inputs:
    fails when it is worse by more than `fidelity_drop_db`, with the stated confidence."""
    from tinygate.artifacts import backend_name
    from tinygate.gate import fidelity_key
    from tinygate.pytest_plugin import unmeasurable
    from tinygate.regression import worse_by

    results = measured(variant_run.fidelity)
    art = measured(variant_run.artifact)
    backend = backend_name(art.kind, art.meta)  # a web variant's meta names its runtime
    if variant_baseline.get("measured_on", backend) != backend:
        unmeasurable(request, variant_run, [], f"{variant.id}: refused: the baseline's fidelity was measured on "
                                               f"the {variant_baseline['measured_on']}, today's on the {backend}")
    theirs = gate_baseline.samples(variant.id) or {}
    if not any(fidelity_key(r.output) in theirs for r in results):
        pytest.skip(f"{variant.id}: the baseline holds no per-input fidelity for this variant (accepted before "
                    "tinygate kept it): accept a new baseline")
    _same_data(gate_baseline, variant, gate_recorder, pytestconfig)
    s = gate.config.regression
    verdicts = [(r.output, worse_by(theirs[fidelity_key(r.output)], r.samples_db, s.fidelity_drop_db, s.confidence))
                for r in results if fidelity_key(r.output) in theirs]
    _per_output(gate_recorder, variant, "fidelity_change_vs_baseline", verdicts, -s.fidelity_drop_db,
                "output SQNR vs the float model, paired with the baseline's")


def _traced_runner(art, xs, threads: int):
    """A PyTorch model as TorchScript (the baseline's saved one, or today's traced the same way), run op by op as
    traced: the JIT's graph optimizations (which would fold repeated work away) are off for both."""
    import warnings

    import torch

    from tinygate.artifacts import trace_torch

    torch.set_num_threads(threads)
    if art.kind == "torchscript":
        with warnings.catch_warnings():  # TorchScript is deprecated; see tinygate/steps/torch_int8.py
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.load(str(art.path))
    else:
        traced = trace_torch(art, xs)

    def run(*inputs):
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return traced(*(torch.from_numpy(x) for x in inputs))
    return run


def _skip_coreml_off_macos(variant) -> None:
    if variant.backend == "coreml" and coreml_backend() != COREML_RUNTIME:
        pytest.skip(f"{variant.id}: Core ML latency needs MLModel.predict (macOS only)")


@regression_
def test_size_vs_baseline(artifact, variant_baseline, variant, gate_config, gate_recorder):
    settings = gate_config.regression
    if not isinstance(variant_baseline.get("bytes"), int):
        pytest.fail(f"{variant.id}: the baseline has no size for this variant; accept a new baseline", pytrace=False)
    verdict = regression.size_growth(variant_baseline["bytes"], artifact.disk_bytes(), settings.size_growth_pct,
                                     settings.size_growth_floor_kb * 1000)
    _record(gate_recorder, variant, "size_growth_vs_baseline", verdict, settings.size_growth_pct, "%",
            verdict.detail, "<=")


def _same_data(against, variant, gate_recorder, pytestconfig) -> None:
    """Per-sample scores pair only on the same evaluation data: other data fails, unless this run is being
    accepted as the new baseline (with its reason), which replaces the old one."""
    from tinygate.errors import GateError

    try:
        regression.same_data(against, variant.model, gate_recorder.data[variant.model], variant.id,
                             baseline_dir(pytestconfig))
    except GateError as exc:
        if pytestconfig.getoption("--gate-accept-baseline"):
            pytest.skip(f"{exc}; --gate-accept-baseline: this run replaces it")
        pytest.fail(str(exc), pytrace=False)


def _paired(scores, variant, gate_config, gate_recorder, pytestconfig, against, max_psnr, max_acc, check):
    """Pair today's per-sample scores with those of a baseline (`against`) on the same evaluation data, measured
    by the same backend (a macOS Core ML run and a MIL-interpreter run are not paired)."""
    model = gate_config.models[variant.model]
    theirs_on = (against.variant(variant.id) or {}).get("measured_on", scores.backend)
    if theirs_on != scores.backend:
        pytest.skip(f"{variant.id}: refused: the baseline's scores were measured on the {theirs_on}, today's on the "
                    f"{scores.backend}; accept a baseline measured here to compare")
    _same_data(against, variant, gate_recorder, pytestconfig)
    theirs = against.samples(variant.id)
    if theirs is None:
        pytest.skip(f"{variant.id}: the baseline holds no per-sample scores for this variant")
    settings = gate_config.regression
    if model.task == "image":
        verdict = regression.mean_delta(theirs["psnr"], scores["psnr"], max_psnr, settings.confidence)
        _record(gate_recorder, variant, f"psnr_change_{check}", verdict, -max_psnr, "dB", verdict.detail, ">=",
                scores.backend)
    else:
        verdict = regression.flipped(theirs["correct"], scores["correct"], max_acc, 1 - settings.confidence)
        _record(gate_recorder, variant, f"accuracy_change_{check}", verdict, -max_acc, "pts", verdict.detail, ">=",
                scores.backend)


labelled = pytest.mark.select(lambda v, m: m.task != "fidelity")  # label-free: test_fidelity_vs_baseline


@regression_
@labelled
def test_quality_vs_baseline(scores, gate_baseline, variant_baseline, variant, gate_config,
                             gate_recorder, pytestconfig):
    s = gate_config.regression
    _paired(scores, variant, gate_config, gate_recorder, pytestconfig, gate_baseline, s.psnr_drop_db,
            s.accuracy_drop_pct, "vs_baseline")


@regression_
@labelled
def test_quality_drift_vs_release_line_start(scores, gate_baseline, variant_baseline, variant,
                                             gate_config, gate_recorder, pytestconfig):
    """Small drops that each pass against the last baseline must not add up unseen."""
    first = gate_baseline.first
    if first is None or first.variant(variant.id) is None:
        pytest.skip(f"{variant.id}: no first baseline of the release line holds this variant")
    s = gate_config.regression
    _paired(scores, variant, gate_config, gate_recorder, pytestconfig, first, s.drift_psnr_db,
            s.drift_accuracy_pct, "vs_release_line_start")


@regression_
@pytest.mark.latency
@pytest.mark.select(lambda v, m: v.runtime != "web")  # timed in the page, not against a baseline yet
def test_latency_vs_baseline(artifact, gate_baseline, variant_baseline, variant, variant_run, gate_config,
                             gate_threads, gate_recorder):
    """Baseline and candidate timed alternately, in random order, in this process: machine drift hits both."""
    s = gate_config.regression
    verdict, note = _interleaved(artifact, gate_baseline, variant_baseline, variant_run, gate_threads)
    _record(gate_recorder, variant, "latency_ratio_vs_baseline", verdict, 1 + s.slowdown_pct / 100, "x", note, "<=")


def _interleaved(artifact, gate_baseline, variant_baseline, variant_run, threads: int):
    """The interleaved comparison with the baseline's artifact, once per variant and run (the absolute guard
    reads it too): its verdict and a note."""
    from tinygate import pipeline
    from tinygate.history import fingerprint

    variant = variant_run.variant
    _skip_coreml_off_macos(variant)
    s = variant_run.gate.config.regression
    if variant_baseline.get("artifact") == artifact.digest:
        verdict = regression.Verdict(False, 1.0, f"artifact identical to the baseline's (sha256 {artifact.digest[:12]})"
                                                 ": the model cannot be slower")
        return verdict, verdict.detail

    def compare():
        xs = pipeline.example_inputs(variant_run.model)
        frozen = gate_baseline.traced(variant.id) if artifact.kind == "torch" else None
        try:
            if frozen is not None:  # the baseline's code of its day against today's, both traced the same way
                base_run, new_run = _traced_runner(frozen, xs, threads), _traced_runner(artifact, xs, threads)
            else:
                base_run, new_run = runner(gate_baseline.artifact(variant.id), threads), runner(artifact, threads)
        except GateError as exc:
            raise GateError(variant.id, None, str(exc)) from None
        decision = regression.compare_latency(lambda: base_run(*xs), lambda: new_run(*xs), s.slowdown_pct,
                                              s.latency_p_value, s.latency_rounds, s.latency_max_rounds)
        verdict = regression.Verdict(decision.regressed, decision.median_ratio, decision.detail(s.slowdown_pct))
        same_machine = gate_baseline.doc.get("machine", {}).get("id") == str(fingerprint()["id"])
        note = verdict.detail + ("" if same_machine else "; the baseline was recorded on another machine: its "
                                 "stored timings are refused (this interleaved comparison stands)")
        if artifact.kind == "torch":
            note += ("; TorchScript of the baseline's code against today's" if frozen is not None else
                     "; the baseline keeps no TorchScript: it ran with today's code, so a code-only slowdown is "
                     "not seen (accept a new baseline to keep one)")
        return verdict, note
    return measured(lambda: variant_run.gate.once(("interleaved", variant.id), compare))


def _machine(fp: dict) -> str:
    units = fp.get("vector_units")
    return f"{fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs, " + (
        f"vector units {units or 'none known'}" if units is not None else "vector units not recorded")


@regression_
@pytest.mark.latency
@pytest.mark.select(lambda v, m: v.runtime != "web")  # timed in the page, not against a baseline yet
def test_latency_absolute_vs_baseline(artifact, gate_baseline, variant_baseline, variant, variant_run, gate_config,
                                      gate_threads, gate_recorder, pytestconfig):
    """Today's p50 against the p50 stored with the baseline: only on the machine the baseline was recorded
    on; from another machine fingerprint the stored figure is refused, never compared. A stored-p50 rise that the
    interleaved comparison of this run does not confirm is the machine being busier, not the model being slower:
    it is reported as "unknown: machine busy", not failed."""
    from tinygate import latency, pipeline
    from tinygate.history import fingerprint

    _skip_coreml_off_macos(variant)
    theirs, here = gate_baseline.doc.get("machine", {}), fingerprint()
    if theirs.get("id") != here["id"]:
        pytest.skip(f"{variant.id}: refused: the baseline's latency was recorded on machine {theirs.get('id')} "
                    f"({_machine(theirs)}), this is {here['id']} ({_machine(here)}); stored timings are not "
                    "comparable across machines (test_latency_vs_baseline times both here instead)")
    if not isinstance(variant_baseline.get("p50_ms"), int | float):
        pytest.skip(f"{variant.id}: the baseline holds no latency figure (it was accepted without timing)")
    p50 = gate_recorder.figures.get(variant.id, {}).get("p50_ms")
    if p50 is None:  # test_latency did not run in this process: time it the same way
        xs = pipeline.example_inputs(variant_run.model)
        times = latency.timings(runner(artifact, gate_threads), xs, pytestconfig.getoption("--gate-latency-rounds"),
                                warmup=5)
        p50 = float(np.median(times) * 1000)
    s = gate_config.regression
    verdict = regression.absolute_latency(variant_baseline["p50_ms"], p50, s.absolute_slowdown_pct,
                                          s.absolute_floor_ms)
    if verdict.regressed:
        interleaved, _ = _interleaved(artifact, gate_baseline, variant_baseline, variant_run, gate_threads)
        if not interleaved.regressed:
            why = (f"{verdict.detail}, but timed interleaved with the baseline's artifact in this run the ratio is "
                   f"{interleaved.figure:.3f}")
            verdict = regression.Verdict(False, verdict.figure, f"unknown: machine busy: {why}")
            gate_recorder.note(f"{variant.id}: latency versus the stored baseline unknown: machine busy (recorded as "
                               f"a pass: a busy machine's p50 cannot judge it): {why}")
    _record(gate_recorder, variant, "latency_p50_vs_baseline", verdict, s.absolute_slowdown_pct, "%",
            verdict.detail, "<=")
