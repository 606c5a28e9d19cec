"""A hung model or step is stopped at its time limit and the variant fails naming the file, what ran too long and
the option that sets the limit: a torch forward that never returns (--gate-max-call-seconds), a step of the
user's that never ends (--gate-max-step-seconds), even one that swallows every Exception."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tinygate import Gate, safety

NET = '''
import time
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.hang = False

    def forward(self, x):
        while self.hang or float(self.fc.bias[0]) > 100:  # weights from a pull request decide to loop
            try:
                time.sleep(0.01)
            except Exception:
                pass
        return self.fc(x)

def build():
    return Net()
'''

STEP = '''
import time
import tinygate

@tinygate.step(consumes="torch", produces="torch")
def stall(src, params, ctx, out):
    while True:
        try:
            time.sleep(0.01)
        except Exception:  # swallowing every Exception does not escape the limit
            pass
'''

CONFIG = """
[steps]
stall = "stall:stall"

[models.net]
factory = "hangnet:build"
weights = "{weights}"
task = "fidelity"
input = {{ name = "x", shape = [1, 4] }}
output = {{ name = "y" }}
eval = {{ npz = "eval.npz" }}

[models.net.variants.float]
steps = []
budgets = {{ max_size_kb = 100 }}

[models.net.variants.pruned]
steps = [{{ step = "prune", rate = 0.25 }}]
budgets = {{ min_output_cosine = 0.9 }}

[models.net.variants.stalled]
steps = [{{ step = "stall" }}]
budgets = {{ min_output_sqnr_db = 40 }}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "hangnet.py").write_text(NET)
    (tmp_path / "stall.py").write_text(STEP)
    monkeypatch.syspath_prepend(str(tmp_path))
    np.savez(tmp_path / "eval.npz", inputs=np.ones((3, 4), np.float32))
    for name, bias in (("ok", 0.0), ("hang", 1000.0)):
        state = {"fc.weight": torch.ones(2, 4), "fc.bias": torch.full((2,), bias)}
        save_file(state, tmp_path / f"{name}.safetensors")
    monkeypatch.setattr(safety, "_limit", {**safety._limit, "max_call_s": 1.0, "max_step_s": 30.0})
    return tmp_path


def _checks(project, weights, vid):
    (project / "gate.toml").write_text(CONFIG.format(weights=weights))
    gate = Gate(project / "gate.toml", cache_dir=project / f"cache-{weights}")
    return {c.check: c for c in gate.variant(vid).judge()}


def test_a_torch_forward_that_never_returns_is_stopped_naming_the_limit(project):
    check = _checks(project, "hang.safetensors", "net-pruned")["min_output_cosine"]
    assert check.verdict == "not measured"
    assert ".safetensors: one inference (--gate-max-call-seconds) ran past 1 s and was stopped" in check.reason


def test_a_step_that_never_ends_is_stopped_naming_the_step_and_the_limit(project):
    safety.set_max_step_seconds(1.0)
    check = _checks(project, "ok.safetensors", "net-stalled")["min_output_sqnr_db"]
    assert check.verdict == "not measured"
    assert "step stall (--gate-max-step-seconds) ran past 1 s and was stopped" in check.reason, check.reason


def test_without_the_hang_the_same_variants_pass(project):
    assert _checks(project, "ok.safetensors", "net-pruned")["min_output_cosine"].verdict == "pass"
