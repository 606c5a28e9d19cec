"""The tinygate pytest plugin (entry point `pytest11`): installing tinygate is all a repository needs.

It finds the gate config of the run, gives every test that asks for `variant` one parametrization per
configured variant (id `model-variant`, marker torch / onnx / coreml), makes one fixture per step (named
after the step: the artifact that step made for the variant under test), and writes the reports at the
end. The checks themselves are test functions in tinygate.pytest_checks that a repository's test modules
import. All the work is done by tinygate.gate; nothing here is needed to build, measure or judge.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path

import pytest

GATE = pytest.StashKey()  # the run's tinygate.gate.Gate, when the run has a gate config
ACCEPTED = pytest.StashKey()  # what became of --gate-accept-baseline, for the terminal summary

MARKERS = {
    "torch": "checks of variants whose deployable artifact runs in PyTorch",
    "onnx": "checks of variants whose deployable artifact is an ONNX model run by ONNX Runtime",
    "coreml": "checks of variants whose deployable artifact is a Core ML mlprogram package",
    "web": "checks of variants run by onnxruntime-web (WebAssembly) in headless Chromium (runtime = \"web\")",
    "size": "artifact size budgets (bytes on disk, compressed transfer size, ratio to float)",
    "quality": "quality budgets against ground truth and against the float model (PSNR, SSIM, accuracy, fidelity)",
    "spec": "structural checks of an artifact (input/output names and shapes, precision, target)",
    "quantization": "quantized weights read back from artifacts and checked against their error bound",
    "latency": "latency, speedup and memory of each variant, timed with pytest-benchmark",
    "regression": "comparisons with the accepted baseline: size, paired quality, interleaved latency",
    "budget(key)": "the test checks this budget key; it runs for every variant that sets it",
    "artifact_kind(kind)": "the test runs for every variant whose artifact is of this kind (e.g. mlpackage)",
    "with_step(*names)": "the test runs for every variant that has one of these steps",
    "select(fn)": "the test runs for every variant for which fn(variant, model) is true",
    "judge": "checks that run only when judging a pull request's bundle (--gate-bundle)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gate", "tinygate release gate")
    group.addoption("--gate-config", default=None,
                    help="the gate config (default: gate_config in the ini file, else gate.toml in the rootdir)")
    group.addoption("--gate-root", default=None,
                    help="every path the config names must stay inside this folder (default: $TINYGATE_ROOT, else "
                         "the config's folder)")
    group.addoption("--gate-cache-dir", default=None,
                    help="where built artifacts and scores are cached (default: .tinygate-cache beside the config)")
    group.addoption("--gate-reports-dir", default=None,
                    help="reports go to DIR/latest/ (default: reports/ beside the config)")
    group.addoption("--gate-threads", type=int, default=1, help="threads for torch and ONNX Runtime inference")
    group.addoption("--gate-latency-rounds", type=int, default=30, help="timed calls per latency measurement")
    group.addoption("--gate-max-file-mb", type=float, default=1024.0,
                    help="refuse any model, weights or data file larger than this, before reading it")
    group.addoption("--gate-max-call-seconds", type=float, default=120.0,
                    help="stop an ONNX Runtime inference call that runs longer than this (a hostile Loop)")
    group.addoption("--gate-max-tensor-mb", type=float, default=2048.0,
                    help="refuse an ONNX model with a tensor larger than this (shapes inferred before running it)")
    group.addoption("--gate-max-step-seconds", type=float, default=1800.0,
                    help="stop a step (export, quantization, conversion) that runs longer than this")
    group.addoption("--gate-baseline-dir", default=None,
                    help="the baseline to compare with (default: REPORTS/baseline); CI passes the target branch's")
    group.addoption("--gate-accept-baseline", action="store_true",
                    help="make this run the baseline, if it passes every check (needs --gate-reason)")
    group.addoption("--gate-reason", "--reason", dest="gate_reason", default="",
                    help="why this run becomes the baseline (recorded in the history)")
    group.addoption("--gate-new-release-line", action="store_true",
                    help="with --gate-accept-baseline: also restart the drift guard from this baseline")
    group.addoption("--gate-strict", dest="gate_strict", action="store_const", const=True, default=None,
                    help="a budget that cannot be measured here (Core ML timing off macOS, another machine "
                         "profile) or a missing baseline fails instead of skipping (default: on when CI=true)")
    group.addoption("--no-gate-strict", dest="gate_strict", action="store_const", const=False,
                    help="skip, with the reason, what cannot be measured here (default off CI)")
    group.addoption("--no-gate-plots", dest="gate_plots", action="store_false", default=True,
                    help="write results.json and summary.md but no PNG plots (about a second a run)")
    group.addoption("--gate-plots", dest="gate_plots", action="store_true", help="write the PNG plots (default)")
    group.addoption("--gate-bundle", default=None,
                    help="judge the artifacts of this bundle (made by `tinygate build` from a pull request) with this "
                         "config, building nothing and importing nothing from the pull request")
    group.addoption("--gate-approved", action="store_true",
                    help="with --gate-bundle: a person approved the pull request's budget changes (its budgets apply)")
    parser.addini("gate_config", "the gate config, relative to the ini file's folder (default: gate.toml)",
                  default="")


def config_path(config: pytest.Config) -> Path | None:
    """The run's gate config: --gate-config (from the folder pytest was started in), else the ini file's
    gate_config (from the ini file's folder), else gate.toml in the rootdir if there is one."""
    given = config.getoption("--gate-config")
    if given:
        return _from(Path(config.invocation_params.dir), given)
    ini = config.getini("gate_config")
    if ini:
        return _from(config.inipath.parent if config.inipath else config.rootpath, ini)
    default = config.rootpath / "gate.toml"
    return default if default.is_file() else None


def _from(base: Path, given: str | os.PathLike) -> Path:
    path = Path(given).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _root(config: pytest.Config) -> Path | None:
    """--gate-root, from the folder pytest was started in (None: $TINYGATE_ROOT, else the config's folder)."""
    given = config.getoption("--gate-root")
    return _from(Path(config.invocation_params.dir), given) if given else None


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    path = config_path(config)
    if path is None:
        if config.getoption("--gate-accept-baseline"):
            raise pytest.UsageError("gate stopped: --gate-accept-baseline, but this run has no gate config")
        return
    from tinygate.errors import GateError
    from tinygate.gate import Gate
    from tinygate.safety import (
        refuse_unsafe_environment,
        set_max_call_seconds,
        set_max_file_mb,
        set_max_step_seconds,
        set_max_tensor_mb,
    )

    try:
        refuse_unsafe_environment()
        set_max_file_mb(config.getoption("--gate-max-file-mb"))
        set_max_call_seconds(config.getoption("--gate-max-call-seconds"))
        set_max_step_seconds(config.getoption("--gate-max-step-seconds"))
        set_max_tensor_mb(config.getoption("--gate-max-tensor-mb"))
        cache = config.getoption("--gate-cache-dir")
        cache = _from(Path(config.invocation_params.dir), cache) if cache else None
        bundle = config.getoption("--gate-bundle")
        if bundle:
            try:
                gate = _judging(config, path, _from(Path(config.invocation_params.dir), bundle), cache)
            except (GateError, pytest.UsageError):
                raise
            except Exception as exc:  # a hostile bundle must never end in a traceback, nor leave "may ship" behind
                first = (str(exc).strip().splitlines() or [""])[0]
                raise GateError(bundle, None, f"cannot be judged: {type(exc).__name__}: {first}") from None
        else:
            gate = Gate(path, cache, config.getoption("--gate-threads"), root=_root(config))
    except GateError as exc:
        _stopped(config, path, f"gate stopped: {exc}")
    if config.getoption("--gate-accept-baseline") and not config.getoption("gate_reason").strip():
        raise pytest.UsageError('gate stopped: --gate-accept-baseline needs --reason "why this is the new baseline"')
    gate.recorder.accepting = bool(config.getoption("--gate-accept-baseline"))
    gate.progress = _progress(config)
    config.stash[GATE] = gate
    config.pluginmanager.register(_step_fixtures(gate.config.steps), "tinygate-steps")
    if config.getoption("benchmark_storage", None) == "file://./.benchmarks":  # pytest-benchmark's default
        config.option.benchmark_storage = f"file://{reports_root(config) / 'benchmarks'}"


def _progress(config: pytest.Config) -> Callable[[str], None]:
    """A cold build or a long evaluation says what it is doing, on its own line (pytest's dots say how far)."""
    import contextlib

    def say(message: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or hasattr(config, "workerinput"):
            return
        capture = config.pluginmanager.get_plugin("capturemanager")  # a test's output is captured: not this
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                reporter.write_line("")  # after pytest's progress dots
            reporter.write_line(f"tinygate: {message} ...", cyan=True)
    return say


def _judging(config: pytest.Config, path: Path, bundle_dir: Path, cache: Path | None):
    """A Gate over a pull request's bundle: the config is this (the target's) one, with each variant built as the
    pull request built it and held to these budgets unless a person approved the pull request's."""
    from tinygate import review
    from tinygate.bundle import open_bundle
    from tinygate.config import load, read_toml
    from tinygate.gate import Gate
    from tinygate.steps import STEPS

    if config.getoption("--gate-accept-baseline"):
        raise pytest.UsageError("gate stopped: a bundle is judged, never accepted as the baseline")
    bundle = open_bundle(bundle_dir)
    target, candidate = read_toml(path), bundle.candidate_config()
    review.check_shape(candidate, bundle.root / bundle.manifest["config"])
    approved = bool(config.getoption("--gate-approved"))
    known = set(STEPS) | set(target.get("steps", {}) if isinstance(target.get("steps"), dict) else {})
    merged, unbuildable = review.judged_config(target, candidate, approved, known)
    gate = Gate(load(path, merged, _root(config)), cache, config.getoption("--gate-threads"), bundle=bundle)
    gate.review = review.changes(target, candidate) + unbuildable
    gate.approved = approved
    return gate


def _stopped(config: pytest.Config, path: Path, message: str):
    """The run stops before any test: the reports of an earlier run must not say "may ship" beside it, so
    REPORTS/latest/summary.md and results.json say why this one stopped."""
    import json

    given = config.getoption("--gate-reports-dir")
    latest = (_from(Path(config.invocation_params.dir), given) if given else path.parent / "reports") / "latest"
    if latest.is_dir() and not latest.is_symlink():
        (latest / "summary.md").write_text(f"# tinygate: **blocked**\n\n{message}\n", encoding="utf-8")
        (latest / "results.json").write_text(json.dumps({"exitstatus": 4, "stopped": message, "checks": []}))
    raise pytest.UsageError(message) from None


def strict(config: pytest.Config) -> bool:
    """--gate-strict / --no-gate-strict, else on in CI (the environment variable CI is true or 1)."""
    given = config.getoption("gate_strict")
    return given if given is not None else os.environ.get("CI", "").lower() in ("true", "1")


def unmeasurable(request: pytest.FixtureRequest, variant_run, keys: list[str], reason: str) -> None:
    """Budgets that cannot be measured here: recorded as "not measured" with the reason, then the test fails
    under --gate-strict and skips otherwise (the skip shows its reason in the summary)."""
    from tinygate.checks import not_measured

    variant_run.gate.recorder.checks.extend(not_measured(variant_run, key, reason) for key in keys)
    if keys and strict(request.config):
        pytest.fail(f"{reason} (--gate-strict: {', '.join(keys)} not measured)", pytrace=False)
    pytest.skip(reason)


def reports_root(config: pytest.Config) -> Path:
    given = config.getoption("--gate-reports-dir")
    if given:
        return _from(Path(config.invocation_params.dir), given)
    return config.stash[GATE].config.path.parent / "reports"


def reports_dir(config: pytest.Config) -> Path:
    """This run's reports: REPORTS/latest."""
    return reports_root(config) / "latest"


def baseline_dir(config: pytest.Config) -> Path:
    """The baseline compared with: --gate-baseline-dir, else REPORTS/baseline."""
    given = config.getoption("--gate-baseline-dir")
    return _from(Path(config.invocation_params.dir), given) if given else reports_root(config) / "baseline"


# -- one fixture per step --------------------------------------------------------------------------------------

def _step_fixtures(steps) -> types.ModuleType:
    """A plugin holding one fixture per step, named after it: the artifact that step made in the variant under
    test (a test that asks for one runs for every variant with that step)."""
    holder = types.ModuleType("tinygate_step_fixtures")
    for name in steps:
        setattr(holder, name, _step_fixture(name))
    return holder


def _step_fixture(name: str):
    def step_artifact(variant_run):
        return measured(lambda: variant_run.after(name))
    step_artifact.__doc__ = f"The artifact the {name!r} step made for the variant under test (built once, cached)."
    return pytest.fixture(name=name)(step_artifact)


def measured(compute: Callable[[], object]):
    """compute(), or the test fails with one line: the gate's message (a GateError: a user's or a model's fault),
    or the type and first line of any other exception a measurement raised."""
    from tinygate.errors import GateError

    try:
        return compute()
    except GateError as exc:
        failure = str(exc)
    except Exception as exc:  # a measurement that crashes fails its test closed, in one line
        failure = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    pytest.fail(failure, pytrace=False)


# -- parametrization over the configured variants --------------------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames:
        return
    gate = metafunc.config.stash.get(GATE, None)
    if gate is None:
        raise pytest.UsageError(
            f"tinygate: {metafunc.definition.nodeid} needs a gate config: give --gate-config, set gate_config in "
            f"the ini file, or put gate.toml in the rootdir ({metafunc.config.rootpath})")
    variants = gate.config.variants
    if (marker := metafunc.definition.get_closest_marker("budget")) is not None:
        variants = [v for v in variants if marker.args[0] in v.budgets]
    if (marker := metafunc.definition.get_closest_marker("artifact_kind")) is not None:
        variants = [v for v in variants if v.kind == marker.args[0]]
    if (marker := metafunc.definition.get_closest_marker("with_step")) is not None:
        variants = [v for v in variants if any(s.name in marker.args for s in v.steps)]
    if (marker := metafunc.definition.get_closest_marker("select")) is not None:
        variants = [v for v in variants if marker.args[0](v, gate.config.models[v.model])]
    for step in set(metafunc.fixturenames) & set(gate.config.steps):  # a step's artifact: variants with it
        variants = [v for v in variants if any(s.name == step for s in v.steps)]
    metafunc.parametrize(
        "variant", [pytest.param(v, id=v.id, marks=getattr(pytest.mark, v.backend)) for v in variants]
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A check no variant asks for is not a skipped test: deselect it (it shows in the deselected count). A run
    that gates anything first removes the previous REPORTS/latest, so no earlier verdict outlives it."""
    import shutil

    from tinygate.config import Variant

    gate_ = config.stash.get(GATE, None)
    judging = gate_ is not None and gate_.bundle is not None
    items[:] = [i for i in items if judging or i.get_closest_marker("judge") is None]  # judge-only checks
    unused = [i for i in items if "variant" in getattr(i, "fixturenames", ())
              and not isinstance(getattr(i, "callspec", None) and i.callspec.params.get("variant"), Variant)]
    if unused:
        config.hook.pytest_deselected(items=unused)
        items[:] = [i for i in items if i not in unused]
    gating = any("variant" in getattr(i, "fixturenames", ()) for i in items)
    if GATE in config.stash and gating and not hasattr(config, "workerinput"):
        latest = reports_dir(config)
        if latest.is_symlink() or latest.parent.is_symlink():
            raise pytest.UsageError(f"gate stopped: {latest} is or goes through a symlink: reports are written "
                                    "only where they appear to go")
        shutil.rmtree(latest, ignore_errors=True)


# -- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def gate(pytestconfig: pytest.Config):
    """The run's tinygate.gate.Gate: config, cache, and the record of every check."""
    found = pytestconfig.stash.get(GATE, None)
    if found is None:
        pytest.fail("tinygate: this run has no gate config (--gate-config, gate_config in the ini file, or "
                    f"gate.toml in {pytestconfig.rootpath})", pytrace=False)
    return found


@pytest.fixture(scope="session")
def gate_config(gate):
    return gate.config


@pytest.fixture(scope="session")
def gate_recorder(gate):
    return gate.recorder


@pytest.fixture(scope="session")
def gate_threads(gate) -> int:
    return gate.threads


@pytest.fixture
def variant_run(gate, variant):
    """The variant under test, as the library sees it (tinygate.gate.VariantRun)."""
    return gate.variant(variant)


def _measurement(name: str, method: str, doc: str):
    """A fixture that hands a test one measurement of the variant under test (VariantRun.<method>)."""
    def fixture(variant_run):
        return measured(getattr(variant_run, method))
    fixture.__doc__ = doc
    return pytest.fixture(name=name)(fixture)


artifact = _measurement("artifact", "artifact", "The variant's deployable artifact: the last of its chain of steps.")
float_artifact = _measurement("float_artifact", "float_artifact", "The float model the variant was made from.")
scores = _measurement("scores", "scores", "Per-sample scores of the variant's artifact on the evaluation set.")
float_scores = _measurement("float_scores", "float_scores", "Per-sample scores of the float model.")
output_fidelity = _measurement("output_fidelity", "fidelity",
                               "Per-output fidelity of the variant to the float model on the evaluation inputs.")


@pytest.fixture
def gate_verdict(variant_run, record_property) -> Callable[..., None]:
    """Judge one of the gate's checks (a budget key) for the variant under test, or hold a `value` measured by
    the test (a timing) to it: record it in the reports and in --junitxml, and fail the test with the value, the
    budget and the context if it is not a pass."""
    def verdict(key: str, value: float | None = None, note: str = "") -> None:
        found = variant_run.check(key) if value is None else [variant_run.judge_value(key, value, note)]
        for c in found:
            record_property(c.check, c.value)
            record_property(f"{c.check}_budget", c.budget)
        bad = next((c for c in found if not c.passed), None)
        if bad is not None:
            pytest.fail(bad.reason, pytrace=False)
    return verdict


@pytest.fixture
def gate_check(variant_run, record_property) -> Callable[..., None]:
    """Record a check of your own (a figure your test measured, held to a limit) in the gate's reports, and
    fail the test when it misses: gate_check("sparsity", 0.31, ">=", 0.29, unit="")."""
    from tinygate.checks import FAIL, PASS, Check, measured

    def check(name: str, value: float, op: str, limit: float, unit: str = "", note: str = "") -> None:
        if op not in (">=", "<="):
            raise ValueError(f"op must be '>=' or '<=', got {op!r}")
        ok = value == value and (value >= limit if op == ">=" else value <= limit)
        v = variant_run.variant
        reason = "" if ok else f"{v.id}: {name} {value:.4g} {unit} is not {op} {limit:g} {unit}".replace("  ", " ")
        variant_run.gate.recorder.checks.append(Check(v.model, v.name, name, measured(value), limit, unit,
                                                      PASS if ok else FAIL, v.backend, note, op, reason))
        record_property(name, value)
        record_property(f"{name}_budget", limit)
        if not ok:
            pytest.fail(reason + (f" ({note})" if note else ""), pytrace=False)
    return check


@pytest.fixture(scope="session")
def gate_baseline(pytestconfig: pytest.Config, gate):
    """The accepted baseline (tinygate.baseline). None accepted yet: stated in the reports, and a skip (a failure
    under --gate-strict); a --gate-baseline-dir that holds none always fails."""
    from tinygate import baseline

    root = baseline_dir(pytestconfig)
    found = measured(lambda: baseline.load(root))
    if found is None:
        named = pytestconfig.getoption("--gate-baseline-dir") is not None
        reason = f"no baseline under {root}" + (" (named by --gate-baseline-dir)" if named else "")
        gate.recorder.note(f"{reason}: nothing was compared with a baseline")
        if gate.recorder.accepting:
            pytest.skip(f"{reason}: this run becomes the first one (--gate-accept-baseline)")
        if named or strict(pytestconfig):
            pytest.fail(f"{reason}: regression checks cannot run" + ("" if named else " (--gate-strict)"),
                        pytrace=False)
        pytest.skip(f'{reason}: accept one with tinygate accept --reason "..."')
    return found


@pytest.fixture
def variant_baseline(gate_baseline, variant) -> dict:
    """This variant's record in the baseline; a new variant skips."""
    found = gate_baseline.variant(variant.id)
    if found is None:
        pytest.skip(f"{variant.id}: not in the baseline (a new variant): nothing to compare with")
    return found


@pytest.fixture
def timed_runner(request, variant_run, gate_threads):
    """The artifact's runner (session built outside any timed region) and seeded inputs of the configured
    shapes, run once untimed so that a model that cannot run fails here with one line."""
    from tinygate import pipeline
    from tinygate.artifacts import COREML_RUNTIME, coreml_backend, runner
    from tinygate.errors import GateError

    variant = variant_run.variant
    if variant.backend == "coreml" and coreml_backend() != COREML_RUNTIME:
        marker = request.node.get_closest_marker("budget")  # the budget this test judges (test_latency: p50)
        key = "min_speedup" if request.node.originalname == "test_speedup" else \
            marker.args[0] if marker else "max_p50_ms"
        unmeasurable(request, variant_run, [key] if key in variant.budgets else [],
                     f"{variant.id}: Core ML latency needs MLModel.predict (macOS only); the MIL interpreter's "
                     "speed says nothing about a device")
    artifact = measured(variant_run.artifact)
    xs = pipeline.example_inputs(variant_run.model)
    try:
        run = runner(artifact, gate_threads)
        run(*xs)
        return run, xs
    except GateError as exc:
        failure = str(exc)
    except Exception as exc:  # the model itself crashes on a well-formed input
        failure = f"{variant.id}: {artifact.path} fails to run: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    pytest.fail(failure, pytrace=False)


@pytest.fixture(autouse=True)
def _alone_when_timed(request: pytest.FixtureRequest):
    """Under pytest-xdist, latency tests hold the machine exclusively and every other gate test holds it shared,
    so no timing runs beside other work. Without xdist, tests run one at a time anyway."""
    gate_ = request.config.stash.get(GATE, None)
    if not os.environ.get("PYTEST_XDIST_WORKER") or gate_ is None or "variant" not in request.fixturenames:
        yield
        return
    from tinygate.latency import machine_lock

    timed = request.node.get_closest_marker("latency") is not None
    with machine_lock(gate_.cache.root / ".machine.lock", exclusive=timed):
        yield


# -- the end of the run: reports, history, baseline ------------------------------------------------------------

def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tinygate import reports

    gate_ = session.config.stash.get(GATE, None)
    if gate_ is None:
        return
    rec = gate_.recorder
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: its controller writes the reports
        session.config.workeroutput["tinygate"] = rec.dump()
        return
    if not (rec.checks or rec.figures):
        return
    out = reports_dir(session.config)
    if any(p.is_symlink() for p in (out, out.parent)):  # reports are written only where they appear to go
        session.config.stash[ACCEPTED] = f"reports NOT written: {out} is or goes through a symlink"
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    reports.write(rec, out, int(exitstatus), _outcomes(session.config), plots=session.config.getoption("gate_plots"))
    _history_and_baseline(session, gate_, int(exitstatus))


def _tracer(cfg):
    """Freeze a PyTorch variant as TorchScript on the config's example inputs (tinygate.artifacts.trace_torch)."""
    from tinygate import pipeline
    from tinygate.artifacts import trace_torch

    def trace(variant_id: str, art, path: Path) -> None:
        model = next(cfg.models[v.model] for v in cfg.variants if v.id == variant_id)
        trace_torch(art, pipeline.example_inputs(model), path)
    return trace


def _outcomes(config: pytest.Config) -> dict[str, int]:
    """pytest's own counts of failed tests and errors, so the reports' headline covers every failure."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", {})
    return {"failed": len([r for r in stats.get("failed", []) if getattr(r, "when", "call") == "call"]),
            "errors": len(stats.get("error", []))}


def _history_and_baseline(session: pytest.Session, gate_, exitstatus: int) -> None:
    """Append this run to REPORTS/history.jsonl, accept it as the baseline if asked (and allowed), redraw the
    trend plot."""
    from tinygate import baseline, history

    config, cfg, rec = session.config, gate_.config, gate_.recorder
    root = reports_root(config)
    run = history.entry(rec, exitstatus, cfg.path.parent)
    if config.getoption("--gate-accept-baseline"):
        # per-sample scores of every labelled variant, per-input fidelity of every label-free one: what the
        # paired regression checks of later runs compare with
        needs_samples = {v.id for v in cfg.variants if cfg.models[v.model].task != "fidelity" or not v.is_float}
        for v in cfg.variants:  # what no check of this run asked for is measured now, for the baseline to keep
            if v.id in needs_samples and v.id not in rec.samples and v.id in rec.artifacts:
                run_ = gate_.variant(v)
                try:
                    run_.fidelity() if cfg.models[v.model].task == "fidelity" else run_.scores()
                except Exception:  # noqa: S110 - the refusal below names what is missing
                    pass
        why_not = baseline.refusal(rec, exitstatus, [v.id for v in cfg.variants], needs_samples)
        if why_not is None:
            reason = config.getoption("gate_reason").strip()
            target = baseline.accept(baseline_dir(config), rec, {**run, "reason": reason},
                                     config.getoption("--gate-new-release-line"), _tracer(cfg))
            run.update(baseline=True, reason=reason)
            config.stash[ACCEPTED] = f"baseline accepted: {target} ({reason})"
        else:
            config.stash[ACCEPTED] = f"baseline NOT accepted: {why_not}"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    history.append(root / "history.jsonl", run)
    if config.getoption("gate_plots"):
        history.trend(history.read(root / "history.jsonl"), reports_dir(config) / "trend.png")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist: gather each worker's checks and figures into the controller's recorder."""
    gate_ = node.config.stash.get(GATE, None)
    if gate_ is not None and "tinygate" in getattr(node, "workeroutput", {}):
        gate_.recorder.merge(node.workeroutput["tinygate"])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from tinygate import reports

    gate_ = config.stash.get(GATE, None)
    if gate_ is None or not gate_.recorder.checks:
        return
    terminalreporter.section("tinygate budgets")
    for line in reports.terminal_table(gate_.recorder):
        terminalreporter.write_line(line)
    for note in gate_.recorder.notes:
        terminalreporter.write_line(note, yellow=True)
    terminalreporter.write_line(reports.headline(gate_.recorder, exitstatus, _outcomes(config)))
    terminalreporter.write_line(f"reports: {reports_dir(config)}")
    if ACCEPTED in config.stash:
        terminalreporter.write_line(config.stash[ACCEPTED], bold=True)
