"""Every path a config names stays inside the project root (the config's folder, or --gate-root /
$TINYGATE_ROOT): an absolute path, a `..`, a symlinked weights file, .npz or image folder leading out are refused in
one line naming the key; inside, symlinks are fine. (An image folder holding a symlink is refused
when it is read: tests/test_image_folder.py.)"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from bundled import REPO

from tinygate.config import load
from tinygate.errors import GateError

TABLE = """
[models.digits]
factory = "tinygate.zoo.digits:build"
weights = "{weights}"
task = "classifier"
input = {{ name = "digit", shape = [1, 1, 8, 8] }}
output = {{ name = "logits" }}
eval = {eval}

[models.digits.variants.float]
steps = []
budgets = {{ min_accuracy_pct = 90 }}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYGATE_ROOT", raising=False)
    root = tmp_path / "project"
    (root / "weights").mkdir(parents=True)
    shutil.copy(REPO / "weights/digits.safetensors", root / "weights/digits.safetensors")
    np.savez(root / "eval.npz", inputs=np.zeros((2, 1, 8, 8), np.float32), labels=np.zeros(2, np.int64))
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(REPO / "weights/digits.safetensors", tmp_path / "elsewhere/digits.safetensors")
    np.savez(tmp_path / "elsewhere/eval.npz", inputs=np.zeros((2, 1, 8, 8), np.float32), labels=np.zeros(2, np.int64))
    return root


def _write(root, weights="weights/digits.safetensors", eval_='{ npz = "eval.npz" }'):
    (root / "gate.toml").write_text(TABLE.format(weights=weights, eval=eval_))
    return root / "gate.toml"


def test_paths_inside_the_project_and_symlinks_within_it_are_accepted(project):
    os.symlink(project / "weights/digits.safetensors", project / "linked.safetensors")
    cfg = load(_write(project, weights="linked.safetensors"))
    assert cfg.models["digits"].weights == project / "weights/digits.safetensors"


@pytest.mark.parametrize(("key", "edit"), [
    ("weights", lambda p: {"weights": str(p.parent / "elsewhere/digits.safetensors")}),
    ("weights", lambda p: {"weights": "../elsewhere/digits.safetensors"}),
    ("eval.npz", lambda p: {"eval_": '{ npz = "../elsewhere/eval.npz" }'}),
    ("eval.images", lambda p: {"eval_": '{ images = "../elsewhere" }'}),
], ids=["absolute_weights", "dotdot_weights", "dotdot_npz", "dotdot_image_folder"])
def test_a_path_leading_out_is_refused_naming_the_key(project, key, edit):
    with pytest.raises(GateError, match=rf"models\.digits\.{key}: .* is outside the project root"):
        load(_write(project, **edit(project)))


@pytest.mark.parametrize("what", ["weights", "npz", "image folder"])
def test_a_symlink_leading_out_is_refused(project, what):
    outside = project.parent / "elsewhere"
    if what == "weights":
        os.symlink(outside / "digits.safetensors", project / "out.safetensors")
        config = _write(project, weights="out.safetensors")
    elif what == "npz":
        os.symlink(outside / "eval.npz", project / "out.npz")
        config = _write(project, eval_='{ npz = "out.npz" }')
    else:
        os.symlink(outside, project / "images")
        config = _write(project, eval_='{ images = "images" }')
    with pytest.raises(GateError, match="leads through a symlink outside the project root"):
        load(config)


def test_a_declared_root_widens_it(project, monkeypatch):
    config = _write(project, weights="../elsewhere/digits.safetensors")
    assert load(config, root=project.parent).models["digits"].weights.parent.name == "elsewhere"
    monkeypatch.setenv("TINYGATE_ROOT", str(project.parent))
    assert load(config).models["digits"].weights.parent.name == "elsewhere"
    with pytest.raises(GateError, match="outside the project root"):  # a root must hold the config itself
        load(config, root=project / "weights")

