"""Helpers for the tests of tinygate: run a whole gate in a subprocess on a config written for the test."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import onnxruntime.quantization  # noqa: F401
import pytest
from hypothesis import HealthCheck, settings

# onnxruntime.transformers (which onnxruntime.quantization imports) appends its own folder to sys.path and imports
# its modules by their bare names from then on. Imported here, before any test, that entry is part of the sys.path
# that monkeypatch.syspath_prepend restores; imported first inside such a test, it would be lost at its teardown and
# a later test in the same worker would fail with "No module named 'fusion_utils'".

REPO = Path(__file__).resolve().parents[1]

# Hypothesis profiles, registered once here. `dev` (default) is quick; `ci` is derandomized (the same
# examples on every run), has no deadline (shared CI machines stall) and runs more examples; the
# round-trip property in test_quant_properties.py asks for 1,000 under `ci`. Choose with HYPOTHESIS_PROFILE=ci or
# --hypothesis-profile=ci.
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("ci", max_examples=300, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The configs the self-tests write sit in temporary folders and name the bundled weights in this checkout: their
# project root is the whole file system. The confinement tests (test_confinement.py) set their own.
os.environ.setdefault("TINYGATE_ROOT", "/")


def pytest_configure(config):
    """One artifact cache for every gate the tests run in a subprocess (unless a test gives its own): entries are
    keyed by content and sealed, so a test that changes a model gets its own entries, and the float exports and
    the bundled data sets are made once per run instead of once per test. Made by the controller, inherited by
    the xdist workers through the environment."""
    if os.environ.get("TINYGATE_TEST_CACHE"):  # given (CI gives the gate's own, so the gate reads what they built)
        os.environ["TINYGATE_TEST_CACHE"] = str(Path(os.environ["TINYGATE_TEST_CACHE"]).resolve())
    elif not hasattr(config, "workerinput"):
        config._tinygate_test_cache = tempfile.mkdtemp(prefix="tinygate-test-cache-")
        os.environ["TINYGATE_TEST_CACHE"] = config._tinygate_test_cache


def pytest_unconfigure(config):
    _zygote.close()
    folder = getattr(config, "_tinygate_test_cache", None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("TINYGATE_TEST_CACHE", None)


@dataclass
class GateRun:
    returncode: int
    output: str
    reports: Path

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.output.splitlines() if needle in line]

    def line(self, needle: str) -> str:
        """The first line with `needle` (pytest repeats a failure message in its summary when CI is set)."""
        found = self.lines(needle)
        assert found, f"no line contains {needle!r}:\n{self.output}"
        return found[0]


def _outer_env() -> dict[str, str]:
    """This process's environment without pytest-xdist's and pytest's own variables (a gate is no worker)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}


def gate_process(tmp_path: Path, config: Path, *args: str, cache: Path | None = None,
                 env: dict | None = None) -> GateRun:
    """`pytest model_tests` on a config in a process of its own (forked by tests/zygote.py, or a new interpreter
    where the environment sets PYTHON* variables), with reports in tmp_path, and the cache given, or the
    run's shared one ($TINYGATE_TEST_CACHE); a run whose environment injects code (a plugin that breaks a step,
    tampers with outputs) gets its own in tmp_path, so that what it builds never reaches another test."""
    reports = tmp_path / "reports"
    if cache is None and env:
        cache = tmp_path / "cache"
    # -p no:hypothesispytest: the gate uses no Hypothesis, whose plugin imports it (0.8 s) at every run's end;
    # --no-gate-plots: drawing the PNGs took a second a run (a test that looks at one passes --gate-plots)
    cmd = [sys.executable, "-m", "pytest", str(REPO / "model_tests"), "-p", "no:cacheprovider", "-p",
           "no:hypothesispytest", "-q", "--no-gate-plots",
           "--no-gate-strict",
           f"--gate-config={config}",
           f"--gate-cache-dir={cache or os.environ.get('TINYGATE_TEST_CACHE') or tmp_path / 'cache'}",
           f"--gate-reports-dir={reports}", *args]
    outer = _outer_env()
    if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # beside the other workers' gates: a share of the cores each
        from tinygate.evaluate import eval_threads

        outer.setdefault("TINYGATE_EVAL_THREADS", str(eval_threads()))
    if any(key.startswith("PYTHON") for key in env or {}):  # it must reach the start of a new interpreter
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env={**outer, **env})
        return GateRun(proc.returncode, proc.stdout + proc.stderr, reports / "latest")
    fd, output = tempfile.mkstemp(prefix="gate-output-", suffix=".txt")
    os.close(fd)
    try:
        returncode = _zygote.run(cmd[3:], REPO, {**outer, **(env or {})}, Path(output), timeout=900)
        return GateRun(returncode, Path(output).read_text(errors="replace"), reports / "latest")
    finally:
        os.unlink(output)


class _Zygote:
    """This worker's tests/zygote.py: a server that forks each gate run from a process that has imported torch,
    onnxruntime, pytest and tinygate once (2.5 s a run, about 150 runs). Started on first use; it ends with the
    worker (its input closes)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def run(self, args: list[str], cwd: Path, env: dict, output: Path, timeout: float) -> int:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "zygote.py")], cwd=REPO,
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                             env=_outer_env())
            request = {"args": args, "cwd": str(cwd), "env": env, "output": str(output), "timeout": timeout}
            try:
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
                reply = json.loads(self._line())
            except BaseException:  # interrupted mid-run: the server's next line would answer this request
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise
            if reply["timed_out"]:
                raise subprocess.TimeoutExpired(args, timeout)
            return reply["rc"]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()  # the server's loop ends
            self.proc.wait(timeout=30)
            self.proc.stdout.close()
            self.proc = None

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/zygote.py ended (exit {self.proc.wait()}): see its stderr above")
        return line


_zygote = _Zygote()


@pytest.fixture
def run_gate(tmp_path: Path):
    """Run `pytest model_tests` on a given gate config in a process of its own, with its own reports folder."""
    def run(config: Path, *args: str, cache: Path | None = None, env: dict | None = None) -> GateRun:
        return gate_process(tmp_path, config, *args, cache=cache, env=env)
    return run


@pytest.fixture
def torch_project(tmp_path: Path, monkeypatch):
    """A folder with a factory module of the given source (imported as is, a stale copy of the same name dropped),
    seeded weights from its `build()` as `<module>.safetensors`, and `samples` evaluation inputs of `shape` as
    eval.npz."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    def make(module: str, source: str, shape: tuple[int, ...], samples: int) -> Path:
        (tmp_path / f"{module}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, module, raising=False)  # another test's module of that name
        built = importlib.import_module(module).build()
        torch.manual_seed(0)
        save_file(built.state_dict(), tmp_path / f"{module}.safetensors")
        np.savez(tmp_path / "eval.npz", inputs=np.random.default_rng(0).random((samples, *shape), dtype=np.float32))
        return tmp_path
    return make


@pytest.fixture
def mlp_project(torch_project):
    """torch_project of `mlp`, a two-layer MLP of the given widths."""
    def make(inputs: int, hidden: int, outputs: int, samples: int) -> Path:
        return torch_project("mlp", "import torch\n\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear("
                             f"{inputs}, {hidden}), torch.nn.ReLU(), torch.nn.Linear({hidden}, {outputs}))\n",
                             (inputs,), samples)
    return make


def init_project(root: Path, module: str = "mlp") -> str:
    """`tinygate init` on a torch_project's weights and data, its config and cache beside them: the config written."""
    from tinygate import cli

    assert cli.main(["init", str(root / f"{module}.safetensors"), "--factory", f"{module}:build", "--data",
                     str(root / "eval.npz"), "--config", str(root / "gate.toml"), "--cache-dir",
                     str(root / "cache")]) == 0
    return (root / "gate.toml").read_text()
