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

from fixtures.keys import CONFIG, RECORDER  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gate", "tinygate release gate")
    group.addoption("--gate-config", default="gate.toml", help="budgets file (default: gate.toml at the root)")
    group.addoption("--gate-cache-dir", default=".tinygate-cache", help="where built artifacts and scores are cached")
    group.addoption("--gate-reports-dir", default="reports", help="reports go to DIR/latest/ (default: reports)")
    group.addoption("--gate-threads", type=int, default=1, help="threads for torch and ONNX Runtime inference")
    group.addoption("--gate-latency-rounds", type=int, default=30, help="timed calls per latency measurement")
    group.addoption("--gate-max-file-mb", type=float, default=1024.0,
                    help="refuse any model, weights or data file larger than this, before reading it")


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
    config.stash[RECORDER] = Recorder()


def _reports_dir(config: pytest.Config) -> Path:
    path = Path(config.getoption("--gate-reports-dir"))
    return (path if path.is_absolute() else config.rootpath / path) / "latest"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tinygate import reports

    rec = session.config.stash.get(RECORDER, None)
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: its controller writes the reports
        if rec is not None:
            session.config.workeroutput["tinygate"] = rec.dump()
        return
    if rec is not None and (rec.checks or rec.figures):
        reports.write(rec, _reports_dir(session.config), int(exitstatus))


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
    terminalreporter.write_line(f"reports: {_reports_dir(config)}")
