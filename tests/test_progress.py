"""A long evaluation says how far it is (issue 15, item 5): every PROGRESS_EVERY_S, the inputs done, the time spent
and the time left, for the variant and for the float model it is compared with; a short one says nothing more."""

from __future__ import annotations

import re
import time

import numpy as np

from tinygate import Gate, evaluate

CONFIG = """
[models.net]
factory = "mlp:build"
weights = "mlp.safetensors"
task = "fidelity"
input = { name = "x", shape = [1, 4] }
output = { name = "y" }
eval = { npz = "eval.npz" }

[models.net.variants.float]
steps = []
budgets = { max_size_kb = 100 }

[models.net.variants.pruned]
steps = [{ step = "prune", rate = 0.25 }]
budgets = { min_output_cosine = 0.5 }
"""


class _Data:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def sample(self, i: int) -> tuple[np.ndarray]:
        return (np.full((1, 4), i, np.float32),)


def test_a_long_pass_says_how_far_it_is_and_a_short_one_does_not(monkeypatch):
    def slow(art, threads, **how):
        return lambda x: (time.sleep(0.02), [x * 2])[1]

    monkeypatch.setattr(evaluate, "runner_all", slow)
    said: list[str] = []
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY_S", 0.05)
    outs = evaluate.per_sample(None, _Data(12), 1, said.append)
    assert [float(o[0][0, 0]) for o in outs] == [2.0 * i for i in range(12)]  # every sample, in order
    assert said and all(re.fullmatch(r"\d+ of 12 inputs in \d+ s, about \d+ s to go", m) for m in said), said
    assert len(said) < 12 and int(said[-1].split()[0]) < 12  # this often, and never "12 of 12"
    said.clear()
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY_S", 10.0)
    evaluate.per_sample(None, _Data(12), 1, said.append)
    assert said == []


def test_the_gate_says_it_for_the_variant_and_for_its_float_model(mlp_project, monkeypatch):
    tmp_path = mlp_project(4, 8, 2, samples=3)
    (tmp_path / "gate.toml").write_text(CONFIG)
    monkeypatch.setattr(evaluate, "PROGRESS_EVERY_S", 0.0)
    gate = Gate(tmp_path / "gate.toml", cache_dir=tmp_path / "cache")
    said: list[str] = []
    gate.progress = said.append
    assert all(c.passed for c in gate.variant("net-pruned").judge())
    assert "net-pruned: 1 of 3 inputs in 0 s, about 0 s to go" in said, said
    assert "net-pruned: the float model: 2 of 3 inputs in 0 s, about 0 s to go" in said, said
