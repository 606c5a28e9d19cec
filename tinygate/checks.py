"""Check records and the budget checks: each turns a variant's measurements into a Check.

A Check is what every view speaks (terminal table, results.json, summary.md, JUnit, history): the
value measured, the budget it is held to, and a verdict: pass, fail, or not measured (with the reason).
The functions here take a tinygate.gate.VariantRun and know nothing of pytest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tinygate.budgets import BUDGETS, QUANTIZING_STEPS, default_weight_sqnr_db

if TYPE_CHECKING:
    from tinygate.gate import VariantRun

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"


@dataclass
class Check:
    model: str
    variant: str
    check: str
    value: float | str | None
    budget: float | str | None
    unit: str
    verdict: str  # pass | fail | not measured
    backend: str
    note: str = ""
    op: str = ""  # how value is compared with budget: ">=", "<=" or "=="
    reason: str = ""  # a failure or a not-measured verdict, in one line

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}"

    def as_dict(self) -> dict:
        """The record as results.json holds it: every field, and `passed` for readers that want a boolean."""
        return {**asdict(self), "passed": self.passed}


def measured(value: object) -> float | None:
    """A measured figure: a number (the reports write a non-finite one as null, saying where), or None."""
    return float(value) if isinstance(value, int | float) and not math.isnan(value) else None


def budget_check(run: VariantRun, key: str, value: float, note: str = "", budget: float | None = None,
                 explain: Callable[[], str] | None = None, measured_on: str | None = None) -> Check:
    """Hold a measured value to a budget key (the variant's own unless `budget` is given)."""
    v, spec = run.variant, BUDGETS[key]
    budget = v.budgets[key] if budget is None else budget
    ok = spec.holds(value, budget)
    reason = ""
    if not ok:
        op = "below the floor" if spec.kind == "min" else "above the limit"
        where = f" on the {measured_on}" if measured_on == "MIL interpreter" else ""
        shown = "NaN" if value is None or value != value else f"{value:.4g}"
        reason = (f"{v.id}: {spec.label} {shown} {spec.unit}{where} is {op} {budget:g} {spec.unit}"
                  + (f" ({note})" if note else "") + (f"; {explain()}" if explain else ""))
    return Check(v.model, v.name, key, measured(value), budget, spec.unit, PASS if ok else FAIL,
                 measured_on or v.backend, note, ">=" if spec.kind == "min" else "<=", reason)


def spec_check(run: VariantRun, name: str, actual: object, expected: object, note: str = "") -> Check:
    """A structural check (names, shapes, precision): passes when actual equals expected."""
    v = run.variant
    ok = actual == expected
    reason = "" if ok else f"{v.id}: {name} is {actual!r}, expected {expected!r}" + (f" ({note})" if note else "")
    return Check(v.model, v.name, name, str(actual), str(expected), "", PASS if ok else FAIL, v.backend, note,
                 "==", reason)


def not_measured(run: VariantRun, key: str, reason: str) -> Check:
    spec = BUDGETS.get(key)
    v = run.variant
    return Check(v.model, v.name, key, None, v.budgets.get(key), spec.unit if spec else "", NOT_MEASURED,
                 v.backend, "", "", reason)


# -- size ----------------------------------------------------------------------------------------------------

def size_kb(run: VariantRun) -> list[Check]:
    art = run.artifact()
    return [budget_check(run, "max_size_kb", art.disk_bytes() / 1000, note=str(art.path))]


def size_ratio(run: VariantRun) -> list[Check]:
    mine, base = run.artifact().disk_bytes(), run.float_artifact().disk_bytes()
    return [budget_check(run, "max_size_ratio", mine / base, note=f"{mine} bytes vs float {base} bytes")]


def transfer_kb(run: VariantRun) -> list[Check]:
    return [budget_check(run, "max_transfer_kb", run.artifact().transfer_bytes() / 1000,
                         note="gzip -9 / deflated zip")]


# -- quality against ground truth and the float model --------------------------------------------------------

def _quality(key: str, figure: Callable, note: str = "", against_float: bool = False):
    def check(run: VariantRun) -> list[Check]:
        scores = run.scores()
        value, detail = figure(scores, run.float_scores()) if against_float else (figure(scores), note)
        return [budget_check(run, key, value, note=detail, explain=run.explain(), measured_on=scores.backend)]
    check.__doc__ = f"{BUDGETS[key].label} ({key})"
    return check


def _mean(name: str, scale: float = 1.0):
    from tinygate import metrics

    return lambda s: scale * metrics.mean(s[name])


def _drop(name: str, scale: float, unit: str, digits: int):
    from tinygate import metrics

    def figure(mine, base):
        b, m = scale * metrics.mean(base[name]), scale * metrics.mean(mine[name])
        return b - m, f"float {b:.{digits}f}{unit}, this variant {m:.{digits}f}{unit}"
    return figure


def _p5(s) -> float:
    from tinygate import metrics

    return metrics.percentile(s["psnr"], 5)


def _agreement(mine, base):
    from tinygate import metrics

    return metrics.agreement_pct(mine["predictions"], base["predictions"]), ""


# -- fidelity to the float model, per output -----------------------------------------------------------------

def _fidelity(key: str, figure: str):
    def check(run: VariantRun) -> list[Check]:
        from tinygate.artifacts import backend_name
        from tinygate.fidelity import worst

        results = run.fidelity()
        bad = worst(results, figure, BUDGETS[key].kind)
        others = ", ".join(f"{r.output} {getattr(r, figure):.4g}" for r in results if r is not bad)
        return [budget_check(run, key, getattr(bad, figure),
                             note=f"worst output {bad.output!r}" + (f"; {others}" if others else ""),
                             measured_on=backend_name(run.artifact().kind, run.artifact().meta))]
    check.__doc__ = f"{BUDGETS[key].label}, the worst output decides ({key})"
    return check


# -- quantized weights read back from the artifact -----------------------------------------------------------

def _quantized_weights(run: VariantRun) -> tuple[Check, Check]:
    """Every quantized tensor read back and dequantized against the float weight it came from: the worst
    error/bound ratio, and the worst tensor's SQNR (measured once per artifact)."""
    from tinygate import quant_artifacts
    from tinygate.errors import GateError

    def read(out) -> None:
        import json

        v, art = run.variant, run.artifact()
        weights = run.reference_weights()
        tensors = quant_artifacts.read(art, weights)
        if not tensors:
            raise GateError(art.path, None, f"{v.id}: holds no quantized weight that matches a float weight")
        (out / "tensors.json").write_text(json.dumps([asdict(quant_artifacts.check_best(t, weights[t.name]))
                                                      for t in tensors], default=lambda x: x.item()))

    def measure() -> tuple[Check, Check]:
        import json

        from tinygate.cache import key_of, tool_versions

        v = run.variant
        # cached by the artifact's and its chain's hashes: a warm run reads no package and loads no weights
        key = key_of(quantized_weights=[a.digest for a in run.chain()],
                     steps=[[st.name, st.params] for st in v.steps],
                     tools=tool_versions("tinygate.quant_artifacts", "tinygate.gate", "tinygate.checks"))
        entry = run.gate.cache.get_or_build(key, read, optional=True)
        checks = [quant_artifacts.TensorCheck(**{**t, "where": tuple(t["where"])})
                  for t in json.loads((entry / "tensors.json").read_text())]
        worst = max(checks, key=lambda c: c.max_error / c.bound if c.bound > 0 else float("inf"))
        ratio = worst.max_error / worst.bound if worst.bound > 0 else float("inf")
        reason = "" if worst.within_bound else (
            f"{v.id}: quantized weight {worst.stored} (float {worst.name}) is off by {worst.max_error:.4g} at "
            f"{worst.where}, above its bound {worst.bound:.4g} (scale {worst.scale:.4g}); SQNR "
            f"{worst.sqnr_db:.1f} dB")
        bound = Check(v.model, v.name, "weight_error_vs_bound", measured(ratio), 1.0, "x bound",
                      PASS if worst.within_bound else FAIL, v.backend, f"worst {worst.stored}", "<=", reason)
        step = next(s for s in v.steps if s.name in QUANTIZING_STEPS)
        lowest = min(checks, key=lambda c: c.sqnr_db)
        floor = v.budgets.get("min_weight_sqnr_db", default_weight_sqnr_db(step.name, step.params))
        return bound, budget_check(run, "min_weight_sqnr_db", lowest.sqnr_db, note=f"worst tensor {lowest.stored}",
                                   budget=floor)
    return run.gate.once(("quantized", run.variant.id), measure)


def weight_error_bound(run: VariantRun) -> list[Check]:
    """Each quantized weight dequantizes to within its bound of the float weight (S/2 for int8, the nearest
    entry for a look-up table); the worst tensor is named."""
    return [_quantized_weights(run)[0]]


def weight_sqnr(run: VariantRun) -> list[Check]:
    """The worst quantized tensor's SQNR stays above the floor (default 30 dB for int8, 24 dB for 7-bit
    `reduce_range`, 4.5 dB per LUT bit)."""
    return [_quantized_weights(run)[1]]


def existing_quantization(run: VariantRun) -> list[Check]:
    """A model that came int8: every quantized weight's scale is finite and positive, and reaches at least a quarter of
    its integer range (a scale several times too coarse throws bits away; no float weights exist to say more)."""
    import numpy as np

    from tinygate import quant_artifacts
    from tinygate.errors import GateError

    v, art = run.variant, run.artifact()
    tensors = quant_artifacts.read_existing(art.path)
    if not tensors:
        raise GateError(art.path, None, f"{v.id}: holds no int8 weight read through a scale")
    for t in tensors:
        bad = t.params.scale[~(np.isfinite(t.params.scale) & (t.params.scale > 0))]
        if bad.size:
            return [Check(v.model, v.name, "existing_scales_use_range", 0.0, EXISTING_RANGE_FLOOR, "of range", FAIL,
                          v.backend, f"worst {t.stored}", ">=", f"{v.id}: {t.stored}'s scale holds {bad[0]!r}, "
                          "not a finite positive number")]
    uses = [(quant_artifacts.range_use(t), t) for t in tensors]
    (use, channel), worst = min(uses, key=lambda u: u[0][0])
    where = f"{worst.stored}" + (f" channel {channel}" if channel is not None else "")
    ok = use >= EXISTING_RANGE_FLOOR
    reason = "" if ok else (f"{v.id}: {where} reaches {use:.1%} of its integer range (floor "
                            f"{EXISTING_RANGE_FLOOR:.0%}): its scale is about {1 / use:.1f}x too coarse")
    return [Check(v.model, v.name, "existing_scales_use_range", round(use, 4), EXISTING_RANGE_FLOOR, "of range",
                  PASS if ok else FAIL, v.backend, f"worst {where}; {len(tensors)} tensors", ">=", reason)]


EXISTING_RANGE_FLOOR = 0.25  # 7-bit (reduce_range) weights reach 0.5; a scale 4x too coarse fails


def came_int8(variant, model) -> bool:
    """An ONNX variant, without a quantizing step of its own, of a model that was given already int8."""
    from tinygate.safety import check_size
    from tinygate.steps.onnx_steps import quantized_form

    if model.source_kind != "onnx" or variant.kind != "onnx" or any(s.name in QUANTIZING_STEPS for s in variant.steps):
        return False
    try:
        check_size(model.weights)
        return quantized_form(model.weights) is not None
    except Exception:  # an unreadable model fails the checks that read it, with their own line
        return False


# -- Core ML packages, from their spec -----------------------------------------------------------------------

def _coreml_spec(run: VariantRun):
    import json

    from tinygate import coreml_spec as spec_of
    from tinygate.cache import key_of, tool_versions
    from tinygate.errors import GateError

    art = run.artifact()

    def build(out):
        try:
            desc = spec_of.describe(art.path)
        except Exception as exc:
            raise GateError(art.path, None, f"{run.variant.id}: does not load as a Core ML spec: {exc}") from None
        (out / "spec.json").write_text(json.dumps(asdict(desc)))

    # cached by the package's hash: a warm run then never imports coremltools (3 s)
    entry = run.gate.cache.get_or_build(key_of(coreml_spec=art.digest, tools=tool_versions("tinygate.coreml_spec")),
                                        build, optional=True)
    doc = json.loads((entry / "spec.json").read_text())
    return spec_of.CoreMLDescription(**{**doc, "inputs": {k: tuple(v) for k, v in doc["inputs"].items()},
                                        "outputs": {k: tuple(v) for k, v in doc["outputs"].items()}})


def coreml_program(run: VariantRun) -> list[Check]:
    """The package loads as an mlprogram."""
    return [spec_check(run, "model_type", _coreml_spec(run).model_type, "mlProgram")]


def coreml_inputs(run: VariantRun) -> list[Check]:
    """Its input names and shapes are the float model's."""
    return [spec_check(run, "inputs", _coreml_spec(run).inputs, dict(run.model.inputs))]


def coreml_outputs(run: VariantRun) -> list[Check]:
    """Its output names and shapes are the float model's."""
    from tinygate import pipeline

    return [spec_check(run, "outputs", _coreml_spec(run).outputs, pipeline.float_output_shapes(run.model))]


def _convert_params(run: VariantRun) -> dict:
    return next(s.params for s in run.variant.steps if s.name == "coreml")


def coreml_precision(run: VariantRun) -> list[Check]:
    """It declares the configured compute precision."""
    return [spec_check(run, "compute_precision", _coreml_spec(run).precision, _convert_params(run)["precision"])]


def coreml_target(run: VariantRun) -> list[Check]:
    """It declares the spec version of the configured minimum deployment target."""
    from tinygate import coreml_spec as spec_of

    target = _convert_params(run)["target"]
    return [spec_check(run, "spec_version", _coreml_spec(run).spec_version, spec_of.SPEC_VERSION[target],
                       note=f"minimum deployment target {target}")]


# Checks that are not budget keys: the quantized-weight bound and the Core ML spec.
SPEC_CHECKS = {"weight_error_vs_bound": weight_error_bound, "existing_scales_use_range": existing_quantization,
               "coreml_program": coreml_program,
               "coreml_inputs": coreml_inputs, "coreml_outputs": coreml_outputs,
               "coreml_precision": coreml_precision, "coreml_target": coreml_target}


# Budget key -> the check that measures it. Latency keys are timed (tinygate.gate.VariantRun.latency).
BUDGET_CHECKS: dict[str, Callable[[VariantRun], list[Check]]] = {
    "max_size_kb": size_kb,
    "max_size_ratio": size_ratio,
    "max_transfer_kb": transfer_kb,
    "min_psnr_db": _quality("min_psnr_db", _mean("psnr")),
    "min_psnr_p5_db": _quality("min_psnr_p5_db", _p5, note="5th percentile over the evaluation set"),
    "min_ssim": _quality("min_ssim", _mean("ssim")),
    "max_psnr_drop_db": _quality("max_psnr_drop_db", _drop("psnr", 1.0, " dB", 3), against_float=True),
    "min_accuracy_pct": _quality("min_accuracy_pct", _mean("correct", 100.0)),
    "max_accuracy_drop_pct": _quality("max_accuracy_drop_pct", _drop("correct", 100.0, "%", 2), against_float=True),
    "min_top1_agreement_pct": _quality("min_top1_agreement_pct", _agreement, against_float=True),
    "min_output_sqnr_db": _fidelity("min_output_sqnr_db", "sqnr_db"),
    "max_output_abs_diff": _fidelity("max_output_abs_diff", "max_abs_diff"),
    "min_output_cosine": _fidelity("min_output_cosine", "cosine"),
    "min_output_top1_agreement_pct": _fidelity("min_output_top1_agreement_pct", "top1_agreement_pct"),
    "min_weight_sqnr_db": weight_sqnr,
}
