"""The cache is a speed-up, never a source of truth: a forged entry (as a pull request could commit), an edited
helper module of the model's factory, or an edited data file never lets a stale or forged figure decide."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinygate import Gate, pipeline

HELPERS = "def width():\n    return 8\n"
NET = '''
import torch
from helpers_of_mine import width


def build():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, width()), torch.nn.ReLU(),
                               torch.nn.Linear(width(), 3))
'''
DATA = '''
from pathlib import Path

import numpy as np

from tinygate.data import Dataset


def eval_set():
    here = Path(__file__).parent
    return Dataset(np.load(here / "x.npy"), labels=np.load(here / "y.npy"))
'''
CONFIG = '''
[models.mine]
factory = "net_of_mine:build"
weights = "net.safetensors"
task = "classifier"
input = { name = "x", shape = [1, 16] }
output = { name = "logits" }
eval = { source = "data_of_mine:eval_set" }

[models.mine.variants.float]
steps = []
budgets = { min_accuracy_pct = 99 }
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> Path:
    import torch
    from safetensors.torch import save_file

    for name, text in (("helpers_of_mine.py", HELPERS), ("net_of_mine.py", NET), ("data_of_mine.py", DATA)):
        (tmp_path / name).write_text(text)
    (tmp_path / "gate.toml").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home_cache"))  # this machine's secret, made here
    import net_of_mine

    torch.manual_seed(0)
    model = net_of_mine.build()
    save_file(model.state_dict(), tmp_path / "net.safetensors")
    x = np.random.default_rng(0).normal(0, 1, (40, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", model(torch.from_numpy(x)).argmax(1).numpy())  # the float model is 100% right
    yield tmp_path
    _new_process()


def _new_process() -> None:
    """What a fresh process would see: user modules imported again, no data memoized, no entry verified yet."""
    for name in ("helpers_of_mine", "net_of_mine", "data_of_mine"):
        sys.modules.pop(name, None)
    pipeline._data_memo.clear()
    pipeline._digest.cache_clear()


def _accuracy(project: Path) -> tuple[str, float]:
    _new_process()
    (check,) = Gate(project / "gate.toml", cache_dir=project / "cache").variant("mine-float").judge()
    return check.verdict, check.value


def test_a_forged_cache_entry_is_rebuilt_and_never_decides(project):
    np.save(project / "y.npy", (np.load(project / "y.npy") + 1) % 3)  # every label wrong: the model fails
    assert _accuracy(project) == ("fail", 0.0)
    entries = [p.parent for p in (project / "cache").rglob("scores.npz")]
    assert entries
    for entry in entries:  # the forger's entry: every sample right, the old seal kept
        with np.load(entry / "scores.npz") as npz:
            forged = {k: npz[k] for k in npz.files}
        forged["correct"] = np.ones_like(forged["correct"])
        np.savez(entry / "scores.npz", **forged)
    assert _accuracy(project) == ("fail", 0.0)
    for entry in entries:  # a whole entry copied in from elsewhere, sealed with another machine's key
        (entry / ".complete").write_text("0" * 64)
    assert _accuracy(project) == ("fail", 0.0)


def test_editing_a_helper_module_of_the_factory_changes_the_float_models_hash(project):
    from tinygate import config

    _new_process()
    before = pipeline.float_artifact(config.load(project / "gate.toml").models["mine"])
    assert (project / "helpers_of_mine.py").resolve() in pipeline.user_modules(sys.modules["net_of_mine"],
                                                                               project.resolve())
    (project / "helpers_of_mine.py").write_text(HELPERS + "# edited: the model's code changed\n")
    _new_process()
    after = pipeline.float_artifact(config.load(project / "gate.toml").models["mine"])
    assert after.digest != before.digest
    assert pipeline.user_modules(sys.modules["net_of_mine"], project.resolve()) == [
        (project / "helpers_of_mine.py").resolve()]  # torch, numpy and tinygate are not the project's code


def test_editing_a_data_file_in_place_is_seen_by_the_next_run(project):
    assert _accuracy(project) == ("pass", 100.0)
    labels = np.load(project / "y.npy")
    labels[:10] = (labels[:10] + 1) % 3  # a quarter of the labels edited in place
    np.save(project / "y.npy", labels)
    assert _accuracy(project) == ("fail", 75.0)
