"""The library core without pytest: Gate(config).variant(id).judge() gives check records (pass, fail, not
measured with its reason), and steps of a user's own, by dotted path or entry point, are chained, cached and
keyed by their code like the built-in ones."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.bundled import model_table
from tests.user_code import SCALE_STEP
from tinygate import Gate
from tinygate.errors import GateError

STEPS_MODULE = SCALE_STEP + '''

@tinygate.step(consumes="torch", produces="torch")
def explode(src, params, ctx, out):
    raise RuntimeError("this step always crashes")


def undeclared(src, params, ctx, out):
    return src.path
'''

VARIANTS = '''
[models.digits.variants.float]
steps = []
budgets = { max_size_kb = 45, min_accuracy_pct = 98 }

[models.digits.variants.scaled]
steps = [{ step = "scale_weights", scale = 0.5 }]
budgets = { max_size_kb = 45, min_top1_agreement_pct = 99 }

[models.digits.variants.tiny_budget]
steps = [{ step = "scale_weights", scale = 1.0 }]
budgets = { max_size_kb = 1 }

[models.digits.variants.crashing]
steps = [{ step = "explode" }]
budgets = { max_size_kb = 45 }
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "user_steps_core.py").write_text(STEPS_MODULE)
    (tmp_path / "gate.toml").write_text(model_table("digits") + VARIANTS + "\n[steps]\nscale_weights = "
                                        '"user_steps_core:scale_weights"\nexplode = "user_steps_core:explode"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("user_steps_core", None)


def _verdicts(checks) -> dict[str, tuple[str, str]]:
    return {c.check: (c.verdict, c.reason) for c in checks}


def test_judge_gives_pass_fail_and_not_measured_records(project):
    gate = Gate(project / "gate.toml", cache_dir=project / "cache")
    assert _verdicts(gate.variant("digits-float").judge()) == {"max_size_kb": ("pass", ""),
                                                                "min_accuracy_pct": ("pass", "")}
    scaled = _verdicts(gate.variant("digits-scaled").judge())
    assert scaled["min_top1_agreement_pct"][0] == "pass"  # halving every weight keeps the argmax of a ReLU net
    verdict, reason = _verdicts(gate.variant("digits-tiny_budget").judge())["max_size_kb"]
    assert verdict == "fail" and reason.startswith("digits-tiny_budget: size on disk") and "above the limit 1 KB" \
        in reason
    verdict, reason = _verdicts(gate.variant("digits-crashing").judge())["max_size_kb"]
    assert verdict == "not measured"
    assert reason == "digits-crashing: step explode: failed: RuntimeError: this step always crashes"
    assert {c.verdict for c in gate.judge()} == {"pass", "fail", "not measured"}
    assert len(gate.recorder.checks) > 6  # everything judged is in the record the reports are written from


def test_a_user_step_is_cached_and_keyed_by_its_code(project):
    first = Gate(project / "gate.toml", cache_dir=project / "cache").variant("digits-scaled").artifact()
    again = Gate(project / "gate.toml", cache_dir=project / "cache").variant("digits-scaled").artifact()
    assert again.path == first.path  # read back from the cache
    module = project / "user_steps_core.py"
    module.write_text(module.read_text().replace('p.data.mul_(params["scale"])', 'p.data.mul_(params["scale"] * 2)'))
    sys.modules.pop("user_steps_core", None)
    edited = Gate(project / "gate.toml", cache_dir=project / "cache").variant("digits-scaled").artifact()
    assert edited.digest != first.digest  # an edited step rebuilds what it made


def test_a_step_registered_by_an_entry_point(project, monkeypatch):
    found = importlib.metadata.EntryPoint("halve", "user_steps_core:scale_weights", "tinygate.steps")
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [found] if kw.get("group") == "tinygate.steps" else real(**kw))
    text = (project / "gate.toml").read_text() + '\n[models.digits.variants.halved]\nsteps = [{ step = "halve" }]\n' \
                                                 "budgets = { max_size_kb = 45 }\n"
    (project / "gate.toml").write_text(text)
    gate = Gate(project / "gate.toml", cache_dir=project / "cache")
    assert gate.config.steps["halve"].user and gate.config.steps["halve"].params["scale"].default == 0.5
    assert _verdicts(gate.variant("digits-halved").judge())["max_size_kb"][0] == "pass"


@pytest.mark.parametrize(("entry", "problem"), [
    ('scale_weights = "user_steps_core:undeclared"', "is not declared as a step: decorate it with @tinygate.step"),
    ('prune = "user_steps_core:scale_weights"', "not a built-in step or a fixture name; got 'prune'"),
    ('artifact = "user_steps_core:scale_weights"', "not a built-in step or a fixture name; got 'artifact'"),
    ('scale_weights = "no_such_module:f"', "cannot import module 'no_such_module'"),
])
def test_a_bad_user_step_stops_the_config_in_one_line(project, entry, problem):
    text = (project / "gate.toml").read_text()
    (project / "gate.toml").write_text(text[:text.index("\n[steps]")] + f"\n[steps]\n{entry}\n")
    with pytest.raises(GateError) as info:
        Gate(project / "gate.toml", cache_dir=project / "cache")
    assert problem in str(info.value) and "steps." in str(info.value) and "\n" not in str(info.value)


def test_a_run_stopped_by_a_config_error_leaves_no_may_ship_summary(project):
    """An earlier run's "may ship" must not survive a later run that stopped before any test."""
    import subprocess
    import sys

    latest = project / "reports" / "latest"
    latest.mkdir(parents=True)
    (latest / "summary.md").write_text("# tinygate: **may ship**\n")
    (project / "gate.toml").write_text((project / "gate.toml").read_text().replace("min_accuracy_pct = 98",
                                                                                   "min_accuracy_pct = 'high'"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          f"--gate-config={project / 'gate.toml'}", str(project)], capture_output=True, text=True,
                         cwd=project, timeout=300)
    assert run.returncode == 4 and "min_accuracy_pct: must be float" in run.stderr, run.stdout + run.stderr
    summary = (latest / "summary.md").read_text()
    assert "**blocked**" in summary and "min_accuracy_pct: must be float" in summary


DATA_MODULE = '''
from pathlib import Path
from tinygate.data import deterministic
from tinygate.zoo.digits import eval_set as digits_eval

CALLS = Path(__file__).with_name("calls.txt")


def _counted():
    with open(CALLS, "a") as fh:
        fh.write("x")
    return digits_eval()


@deterministic
def marked():
    return _counted()


def unmarked():
    return _counted()
'''


@pytest.mark.parametrize("marked", [True, False], ids=["marked_deterministic", "unmarked"])
def test_a_deterministic_data_source_is_cached_by_its_code_and_any_other_is_called_every_run(tmp_path, monkeypatch,
                                                                                             marked):
    """A source marked tinygate.data.deterministic runs once, then its Dataset comes from the cache until its
    module changes; an unmarked source runs in every run (what it reads cannot be known)."""
    from tinygate import pipeline

    source = "user_data_core:" + ("marked" if marked else "unmarked")
    (tmp_path / "user_data_core.py").write_text(DATA_MODULE)
    (tmp_path / "gate.toml").write_text(model_table("digits", eval_spec=f'{{ source = "{source}" }}')
                                        + VARIANTS.split("[models.digits.variants.scaled]")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    calls = tmp_path / "calls.txt"
    try:
        digests = []
        for edit in ("", "", "\n# edited\n"):
            pipeline._data_memo.clear()  # a new run
            sys.modules.pop("user_data_core", None)
            if edit:
                (tmp_path / "user_data_core.py").write_text(DATA_MODULE + edit)
            gate = Gate(tmp_path / "gate.toml", cache_dir=tmp_path / "cache")
            digests.append(gate.variant("digits-float").evaluation().digest())
        assert len(set(digests)) == 1  # the same data, called or read back
        assert calls.read_text() == ("xx" if marked else "xxx")  # marked: first run, and after the edit
    finally:
        sys.modules.pop("user_data_core", None)
        pipeline._data_memo.clear()


def test_a_variant_is_run_once_for_its_scores_and_its_fidelity_and_the_float_model_once_in_all(project,
                                                                                               monkeypatch):
    """A cold run measures quality and fidelity to the float model in one pass over the evaluation set; the float
    model's outputs are computed once for every variant."""
    from tinygate import artifacts, evaluate

    evaluate._reference_outputs.clear()
    runs: list[str] = []
    real = artifacts.runner_all

    def counting(art, threads=1, **how):
        run = real(art, threads, **how)

        def counted(*xs):
            runs.append(art.digest)
            return run(*xs)
        return counted

    monkeypatch.setattr(evaluate, "runner_all", counting)
    monkeypatch.setattr(artifacts, "runner_all", counting)  # what artifacts.runner (first output) calls
    gate = Gate(project / "gate.toml", cache_dir=project / "cache")
    float_run, scaled = gate.variant("digits-float"), gate.variant("digits-scaled")
    n = len(scaled.evaluation())
    scaled.scores()  # then its fidelity, read back; then the float model's scores, from the kept outputs
    scaled.fidelity()
    float_run.scores()
    assert runs.count(scaled.artifact().digest) == n
    assert runs.count(float_run.artifact().digest) == n
    evaluate._reference_outputs.clear()


def test_the_float_outputs_of_two_models_are_both_kept_until_they_pass_the_memory_bound(monkeypatch):
    """Checks run model by model, so one model's float outputs must survive the other's (a cold bundled run
    computed tinybeauty's twice); past REFERENCE_BYTES the oldest set goes."""
    from types import SimpleNamespace

    from tinygate import evaluate

    calls: list[str] = []
    monkeypatch.setattr(evaluate, "runner_all",
                        lambda art, n, **how: lambda *xs: calls.append(art.digest) or [np.zeros(1000, np.float32)])

    class Data:
        def __init__(self, name):
            self.name = name

        def digest(self):
            return self.name

        def __len__(self):
            return 3

        def sample(self, i):
            return (np.zeros(1, np.float32),)

    a, b = SimpleNamespace(digest="a"), SimpleNamespace(digest="b")
    evaluate._reference_outputs.clear()
    for ref in (a, b, a, b):
        evaluate._float_outputs(ref, Data(ref.digest), 1)
    assert calls == ["a"] * 3 + ["b"] * 3
    monkeypatch.setattr(evaluate, "REFERENCE_BYTES", 3 * 4000)  # room for one set
    calls.clear()
    evaluate._reference_outputs.clear()
    for ref in (a, b, a):
        evaluate._float_outputs(ref, Data(ref.digest), 1)
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3
    evaluate._reference_outputs.clear()
