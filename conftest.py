"""Root conftest: loads the step fixtures, declares the --gate-* options, validates gate.toml before
any test runs, and prints the gate's table (and writes reports/latest/) at the end of the run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "fixtures.gate",
    "fixtures.prune",
    "fixtures.onnx_export",
    "fixtures.ort_optimize",
    "fixtures.ort_fp16",
    "fixtures.ort_int8_dynamic",
    "fixtures.ort_int8_static",
    "fixtures.torch_int8",
    "fixtures.coreml",
    "fixtures.coreml_int8",
    "fixtures.coreml_palettize",
]

from fixtures.keys import ACCEPTED, CONFIG, RECORDER, baseline_dir, reports_dir, reports_root  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gate", "tinygate release gate")
    group.addoption("--gate-config", default="gate.toml", help="budgets file (default: gate.toml at the root)")
    group.addoption("--gate-cache-dir", default=".tinygate-cache", help="where built artifacts and scores are cached")
    group.addoption("--gate-reports-dir", default="reports", help="reports go to DIR/latest/ (default: reports)")
    group.addoption("--gate-threads", type=int, default=1, help="threads for torch and ONNX Runtime inference")
    group.addoption("--gate-latency-rounds", type=int, default=30, help="timed calls per latency measurement")
    group.addoption("--gate-max-file-mb", type=float, default=1024.0,
                    help="refuse any model, weights or data file larger than this, before reading it")
    group.addoption("--gate-baseline-dir", default=None,
                    help="the baseline to compare with (default: REPORTS/baseline); CI passes the target branch's")
    group.addoption("--gate-accept-baseline", action="store_true",
                    help="make this run the baseline, if it passes every check (needs --gate-reason)")
    group.addoption("--gate-reason", "--reason", dest="gate_reason", default="",
                    help="why this run becomes the baseline (recorded in the history)")
    group.addoption("--gate-new-release-line", action="store_true",
                    help="with --gate-accept-baseline: also restart the drift guard from this baseline")


def pytest_configure(config: pytest.Config) -> None:
    from tinygate import config as gate_config
    from tinygate.errors import GateError
    from tinygate.reports import Recorder
    from tinygate.safety import refuse_unsafe_environment, set_max_file_mb

    path = Path(config.getoption("--gate-config"))
    if not path.is_absolute():
        path = config.rootpath / path
    try:
        refuse_unsafe_environment()
        set_max_file_mb(config.getoption("--gate-max-file-mb"))
        config.stash[CONFIG] = gate_config.load(path)
    except GateError as exc:
        raise pytest.UsageError(f"gate stopped: {exc}") from None
    if config.getoption("--gate-accept-baseline") and not config.getoption("gate_reason").strip():
        raise pytest.UsageError('gate stopped: --gate-accept-baseline needs --reason "why this is the new baseline"')
    config.stash[RECORDER] = Recorder()
    if config.getoption("benchmark_storage", None) == "file://./.benchmarks":  # pytest-benchmark's default
        config.option.benchmark_storage = f"file://{reports_root(config) / 'benchmarks'}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tinygate import reports

    rec = session.config.stash.get(RECORDER, None)
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: its controller writes the reports
        if rec is not None:
            session.config.workeroutput["tinygate"] = rec.dump()
        return
    if rec is None or not (rec.checks or rec.figures):
        return
    reports.write(rec, reports_dir(session.config), int(exitstatus))
    _history_and_baseline(session, rec, int(exitstatus))


def _history_and_baseline(session: pytest.Session, rec, exitstatus: int) -> None:
    """Append this run to reports/history.jsonl, accept it as the baseline if asked (and allowed), redraw
    the trend plot."""
    from tinygate import baseline, history

    config = session.config
    root, cfg = reports_root(config), config.stash[CONFIG]
    run = history.entry(rec, exitstatus, config.rootpath)
    if config.getoption("--gate-accept-baseline"):
        needs_samples = {v.id for v in cfg.variants if cfg.models[v.model].task != "fidelity"}
        why_not = baseline.refusal(rec, exitstatus, [v.id for v in cfg.variants], needs_samples)
        if why_not is None:
            reason = config.getoption("gate_reason").strip()
            target = baseline.accept(baseline_dir(config), rec, {**run, "reason": reason},
                                     config.getoption("--gate-new-release-line"))
            run.update(baseline=True, reason=reason)
            config.stash[ACCEPTED] = f"baseline accepted: {target} ({reason})"
        else:
            config.stash[ACCEPTED] = f"baseline NOT accepted: {why_not}"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    history.append(root / "history.jsonl", run)
    history.trend(history.read(root / "history.jsonl"), reports_dir(config) / "trend.png")


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist: gather each worker's checks and figures into the controller's recorder."""
    rec = node.config.stash.get(RECORDER, None)
    if rec is not None and "tinygate" in getattr(node, "workeroutput", {}):
        rec.merge(node.workeroutput["tinygate"])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from tinygate import reports

    rec = config.stash.get(RECORDER, None)
    if rec is None or not rec.checks:
        return
    terminalreporter.section("tinygate budgets")
    for line in reports.terminal_table(rec):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"reports: {reports_dir(config)}")
    if ACCEPTED in config.stash:
        terminalreporter.write_line(config.stash[ACCEPTED], bold=True)
