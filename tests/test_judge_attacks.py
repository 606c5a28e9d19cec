"""A hostile pull request against the two-phase gate (`tinygate build`, then `tinygate judge`).

The pull request degrades the digits model and tries every way of talking its way through that a gate running its
code would fall for: a loosened budget, conftest hooks that rewrite outcomes, a pytest.ini that deselects checks,
modules shadowing a dependency and the standard library, a factory whose import patches the budget comparison,
an exit hook that rewrites the reports, a forged cache. The naive gate (pytest in the pull request's checkout) is
shown to pass it; the judge, on the target's checkout, fails it on the same checks, with the same figures, as the
honest degraded model, and names the loosened budget. A bundle altered after the build is refused in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bundled import REPO, model_table

pytestmark = pytest.mark.slow
SELECT = ["-m", "not latency and not regression"]  # no timing, no baseline: what the attacks are about

VARIANTS = """
[models.digits.variants.float]
steps = []
budgets = { max_size_kb = 45, min_accuracy_pct = 98 }

[models.digits.variants.onnx_int8_dynamic]
steps = [{ step = "onnx_export" }, { step = "ort_int8_dynamic" }]
budgets = { max_size_ratio = 0.4, min_accuracy_pct = 97.5, max_accuracy_drop_pct = 1.0 }

[models.digits.variants.torch_int8]
steps = [{ step = "torch_int8" }]
budgets = { min_accuracy_pct = 97.5, min_top1_agreement_pct = 98.5 }
"""

HOSTILE_FILES = {
    # a hook that turns every failed test into a pass, at the root and beside the config
    "conftest.py": """
import pytest
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.outcome = "passed"
""",
    "model_tests/conftest.py": "ROOT_CONFTEST",
    # deselects the quality checks
    "pytest.ini": "[pytest]\naddopts = -p no:cacheprovider -k \"not accuracy and not agreement\"\n",
    # shadow a dependency and a standard-library module: leave a mark, then hand over the real one
    "filelock.py": "SHADOW",
    "gzip.py": "SHADOW",
    # the factory: the real model, and on import every budget holds, and at exit the reports say "pass"
    "evil_model.py": """
import atexit, json, pathlib
import tinygate.budgets
from tinygate.zoo.digits import build  # noqa: F401

tinygate.budgets.Budget.holds = lambda self, value, budget: True

def _rewrite():
    for latest in pathlib.Path('.').glob('**/reports/latest'):
        (latest / 'summary.md').write_text('# tinygate: may ship')
        (latest / 'results.json').write_text(json.dumps({'exitstatus': 0, 'checks': []}))
atexit.register(_rewrite)
""",
    ".tinygate-cache/forged/artifact.json": '{"kind": "onnx", "artifact": "model.onnx", "digest": "0"}',
}


SHADOW = """
import importlib, os, pathlib, sys
_here = os.path.dirname(os.path.abspath(__file__))
pathlib.Path(_here, "shadowed-" + __name__).write_text("ran")
del sys.modules[__name__]
_path, sys.path[:] = sys.path[:], [p for p in sys.path if os.path.abspath(p or ".") != _here]
try:
    sys.modules[__name__] = importlib.import_module(__name__)
finally:
    sys.path[:] = _path
"""


def _project(root: Path, weights: Path, loosen: bool = False, factory: str = "tinygate.zoo.digits:build") -> Path:
    root.mkdir()
    shutil.copyfile(weights, root / "digits.safetensors")
    text = model_table("digits", weights="digits.safetensors", calibration=True).replace(
        "tinygate.zoo.digits:build", factory) + VARIANTS
    if loosen:
        text = text.replace("min_accuracy_pct = 98", "min_accuracy_pct = 10").replace(
            "min_accuracy_pct = 97.5", "min_accuracy_pct = 10") + "\n[regression]\naccuracy_drop_pct = 50\n"
    (root / "gate.toml").write_text(text)
    (root / "model_tests").mkdir()
    (root / "model_tests" / "test_gate.py").write_text("from tinygate.pytest_checks import *  # noqa: F403\n")
    return root / "gate.toml"


def _degraded(path: Path) -> Path:
    """The digits weights with the first layer perturbed: accuracy falls well under the budgets."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(REPO / "weights" / "digits.safetensors"))
    first = next(k for k, v in state.items() if v.ndim > 1)
    g = torch.Generator().manual_seed(0)
    state[first] = state[first] + 2.0 * state[first].std() * torch.randn(state[first].shape, generator=g)
    save_file(state, str(path))
    return path


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    return subprocess.run(list(args), cwd=cwd, env={**env, "CI": "true"}, capture_output=True, text=True,
                          timeout=900)


def _tinygate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(cwd, sys.executable, "-m", "tinygate", *args)


def _checks(project: Path) -> dict[tuple[str, str], tuple[str, object]]:
    doc = json.loads((project / "reports" / "latest" / "results.json").read_text())
    return {(f"{c['model']}-{c['variant']}", c["check"]): (c["verdict"], c["value"]) for c in doc["checks"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Target, honest and hostile checkouts, their bundles, and the runs of the naive gate and of the judge."""
    tmp = tmp_path_factory.mktemp("attack")
    bad = _degraded(tmp / "degraded.safetensors")
    target = _project(tmp / "target", REPO / "weights" / "digits.safetensors")
    honest = _project(tmp / "honest", bad)
    hostile = _project(tmp / "hostile", bad, loosen=True, factory="evil_model:build")
    for rel, text in HOSTILE_FILES.items():
        (hostile.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        text = {"SHADOW": SHADOW, "ROOT_CONFTEST": HOSTILE_FILES["conftest.py"]}.get(text, text)
        (hostile.parent / rel).write_text(text)
    out = {"target": target.parent, "honest": honest.parent, "hostile": hostile.parent}
    for name in ("honest", "hostile"):
        out[f"build_{name}"] = _tinygate(out[name], "build", "--out", str(tmp / f"bundle-{name}"))
        out[f"naive_{name}"] = _run(out[name], sys.executable, "-m", "pytest", "model_tests", "-q", "--no-gate-strict",
                                    *SELECT)
        out[f"naive_checks_{name}"] = _checks(out[name]) if name == "honest" else None
        out[f"judge_{name}"] = _tinygate(target.parent, "judge", str(tmp / f"bundle-{name}"), "-q", *SELECT)
        out[f"checks_{name}"] = _checks(target.parent)
    out["bundle"] = tmp / "bundle-hostile"
    return out


def test_the_attacks_fool_a_gate_that_runs_the_pull_requests_code(runs):
    assert runs["build_hostile"].returncode == 0, runs["build_hostile"].stderr[-3000:]
    assert (runs["hostile"] / "shadowed-gzip").is_file()  # the pull request's code ran in its own build
    assert runs["naive_honest"].returncode == 1, runs["naive_honest"].stdout[-3000:]
    assert runs["naive_hostile"].returncode == 0, runs["naive_hostile"].stdout[-3000:]  # the old gate says ship


def test_the_judge_fails_the_honest_degraded_model_with_the_figures_of_pytest(runs):
    judged, naive = runs["checks_honest"], runs["naive_checks_honest"]
    assert runs["judge_honest"].returncode == 1, runs["judge_honest"].stdout[-3000:]
    failed = {k for k, (verdict, _) in judged.items() if verdict != "pass"}
    assert ("digits-float", "min_accuracy_pct") in failed
    assert failed == {k for k, (verdict, _) in naive.items() if verdict != "pass"}
    for key, (verdict, value) in naive.items():  # the same verdicts and figures as pytest in the checkout
        assert judged[key][0] == verdict, key
        assert judged[key][1] == pytest.approx(value, rel=1e-6) if isinstance(value, float) else judged[key][1] == \
            value, key


def test_the_judge_fails_the_hostile_pull_request_as_it_fails_the_honest_one(runs):
    result = runs["judge_hostile"]
    assert result.returncode == 1, result.stdout[-3000:]
    hostile, honest = runs["checks_hostile"], runs["checks_honest"]
    for key, (verdict, value) in honest.items():
        assert hostile[key][0] == verdict, key
        if key[1] in ("min_accuracy_pct", "max_accuracy_drop_pct", "min_top1_agreement_pct"):
            assert hostile[key][1] == pytest.approx(value), key
    assert "models.digits.variants.float.budgets.min_accuracy_pct: loosened 98 -> 10" in result.stdout
    assert "regression.accuracy_drop_pct: loosened 0.5 -> 50" in result.stdout
    summary = (runs["target"] / "reports" / "latest" / "summary.md").read_text()
    assert "may ship" not in summary and "min_accuracy_pct" in summary


def test_approval_applies_the_pull_requests_budgets(runs, tmp_path):
    result = _tinygate(runs["target"], "judge", str(runs["bundle"]), "--approved", "-q", *SELECT)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = (runs["target"] / "reports" / "latest" / "summary.md").read_text()
    assert "gate.toml change (approved: --gate-approved): models.digits.variants.float.budgets.min_accuracy_pct: " \
           "loosened 98 -> 10" in summary


@pytest.mark.parametrize("tamper, message", [
    ("hash", "does not match its sha256 in manifest.json: the bundle was altered"),
    ("symlink", "is a symlink: a bundle holds only plain files"),
])
def test_an_altered_bundle_stops_the_judge_in_one_line(runs, tmp_path, tamper, message):
    bundle = tmp_path / "bundle"
    shutil.copytree(runs["bundle"], bundle, symlinks=True)
    victim = sorted(bundle.glob("artifacts/*/*.onnx"))[-1]
    if tamper == "hash":
        victim.write_bytes(victim.read_bytes()[:-1] + b"\1")
    else:
        victim.unlink()
        victim.symlink_to(REPO / "weights" / "digits.safetensors")
    result = _tinygate(runs["target"], "judge", str(bundle), "-q", *SELECT)
    assert result.returncode == 4
    line = next(line for line in (result.stdout + result.stderr).splitlines() if message in line)
    assert str(victim) in line
    assert "may ship" not in (runs["target"] / "reports" / "latest" / "summary.md").read_text()
