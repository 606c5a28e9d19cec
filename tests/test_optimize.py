"""`tinygate optimize`: a budgeted search over the gate's steps under hard constraints. A constraint no point meets is
reported with the closest points and what each misses by (never met by a loosened one); the same search gives the
same front; the chosen variant, written into the config, passes the gate with the budgets written for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from user_code import TWO_HEAD_NET, user_module

from tinygate import Gate, optimize

pytestmark = pytest.mark.slow

CONFIG = """
[models.twohead]
factory = "twohead:build"
weights = "twohead.safetensors"
task = "fidelity"
input = { name = "x", shape = [1, 1, 12, 12] }
output = { names = ["score", "embed"] }
eval = { npz = "eval.npz" }
calibration = { npz = "calib.npz" }

[models.twohead.variants.float]
steps = []
budgets = { max_size_kb = 100 }
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt")
    twohead = user_module(root, "twohead", TWO_HEAD_NET)
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in twohead.build().state_dict().items()}, root / "twohead.safetensors")
    rng = np.random.default_rng(0)
    np.savez(root / "eval.npz", inputs=rng.standard_normal((16, 1, 12, 12)).astype(np.float32))
    np.savez(root / "calib.npz", inputs=rng.standard_normal((8, 1, 12, 12)).astype(np.float32))
    (root / "gate.toml").write_text(CONFIG)
    return root


@pytest.fixture
def small_space(monkeypatch):
    monkeypatch.setattr(optimize, "PRUNE_RATES", (0.0, 0.5))


def _search(project, want):
    return optimize.search(project / "gate.toml", "twohead", want, max_minutes=10, progress=lambda m: None)


def test_a_constraint_no_point_meets_is_reported_with_the_closest_and_by_how_much(project, small_space, tmp_path):
    want = optimize.Constraints(max_size_kb=0.5, min_sqnr_db=30, backends=("onnx",))
    points, floats = _search(project, want)
    assert optimize.choose(points) is None
    text = optimize.report("twohead", "fidelity", want, points, floats, 1.0, tmp_path)
    assert "no point meets every constraint; the closest:" in text
    closest = optimize.closest(points, want)
    assert closest and all("max_size_kb" in p.missing and p.missing["max_size_kb"] > 0 for p in closest)
    assert f"misses max_size_kb by {closest[0].missing['max_size_kb']:.3g}" in text


def test_the_same_search_gives_the_same_front_and_the_choice_passes_the_gate(project, small_space, tmp_path):
    want = optimize.Constraints(max_size_kb=20, min_sqnr_db=30, backends=("onnx",))
    first, floats = _search(project, want)
    again, _ = _search(project, want)
    assert [(p.name, p.size_kb, p.sqnr_db) for p in optimize.front(first)] == \
        [(p.name, p.size_kb, p.sqnr_db) for p in optimize.front(again)]
    best = optimize.choose(first)
    feasible = [p for p in first if p.status == "feasible"]
    assert best is not None and best.size_kb == min(p.size_kb for p in feasible)
    assert all(p.sqnr_db >= 30 and p.size_kb <= 20 for p in feasible)
    optimize.report("twohead", "fidelity", want, first, floats, 1.0, tmp_path)
    assert (tmp_path / "twohead_front.png").stat().st_size > 0 and (tmp_path / "twohead.json").is_file()
    name = optimize.write_variant(project / "gate.toml", "twohead", best, want, "fidelity")
    checks = Gate(project / "gate.toml").variant(f"twohead-{name}").judge()
    assert checks and all(c.verdict == "pass" for c in checks), checks
    budgets = {c.check: c.budget for c in checks}
    assert budgets["max_size_kb"] <= 20 and budgets["min_output_sqnr_db"] >= 30  # never looser than asked


MIXED = """
[models.sensitive]
factory = "sensitive:build"
weights = "sensitive.safetensors"
task = "fidelity"
input = { name = "x", shape = [1, 16] }
output = { name = "y" }
eval = { npz = "eval.npz" }
calibration = { npz = "calib.npz" }

[models.sensitive.variants.float]
steps = []
budgets = { max_size_kb = 1000 }
"""


def test_mixed_precision_keeps_the_sensitive_layers_in_float_and_recovers_10_db(tmp_path, monkeypatch):
    from user_code import SENSITIVE_NET

    monkeypatch.setattr(optimize, "PRUNE_RATES", (0.0,))
    sensitive = user_module(tmp_path, "sensitive", SENSITIVE_NET)
    torch.manual_seed(0)
    net = sensitive.build()
    with torch.no_grad():
        net.fc1.weight[:, 0] = 50.0  # input 0 is always zero in the data below
        net.fc3.bias[7] = -100.0  # hidden unit 7 of fc3 never fires ...
        net.fc4.weight[:, 7] = 50.0  # ... yet fc4 holds a column of huge weights for it
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "sensitive.safetensors")
    rng = np.random.default_rng(1)
    for name, n in (("eval", 32), ("calib", 16)):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        x[..., 0] = 0.0
        np.savez(tmp_path / f"{name}.npz", inputs=x)
    (tmp_path / "gate.toml").write_text(MIXED)
    want = optimize.Constraints(min_sqnr_db=30, backends=("onnx",))
    points, _ = optimize.search(tmp_path / "gate.toml", "sensitive", want, max_minutes=10, progress=lambda m: None)
    by_name = {p.name: p for p in points}
    mixed = [p for p in points if "_mix" in p.name and p.stage == "full"]
    assert mixed, [(p.label, p.status, p.why) for p in points]
    parent = {p.name: by_name[p.name.split("_mix")[0]] for p in mixed}
    gains = [(p.sqnr_db - parent[p.name].sqnr_db, p.size_kb / parent[p.name].size_kb,
              p.steps[-1]["keep_float"]) for p in mixed]
    small = [g for g in gains if g[1] < 1.5]  # at under 1.5x the size of full int8 ...
    assert small and max(small)[0] >= 10, [(p.name, p.status, p.sqnr_db, p.size_kb) for p in mixed]  # ... +10 dB
    assert set(max(small)[2]) == {"fc1.weight", "fc4.weight"}, gains  # the two sensitive layers, found by the search
    chosen = optimize.choose(points)
    assert "_mix" in chosen.name and chosen.sqnr_db >= 30  # smaller than fp16, the only feasible point without it
    name = optimize.write_variant(tmp_path / "gate.toml", "sensitive", chosen, want, "fidelity")  # bools, lists
    checks = Gate(tmp_path / "gate.toml").variant(f"sensitive-{name}").judge()
    assert all(c.verdict == "pass" for c in checks), checks


def test_a_quality_drop_asked_of_a_label_free_model_is_refused_not_ignored(project):
    from tinygate.errors import GateError

    with pytest.raises(GateError, match="--max-drop: twohead is label-free"):
        _search(project, optimize.Constraints(max_drop=0.5, backends=("onnx",)))
