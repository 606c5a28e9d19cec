"""tinygate as a user gets it: a wheel built with `python -m build`, installed into a fresh venv, used in a
folder outside this checkout on two models this repository has never seen (an ONNX file and a PyTorch state
dict), with a step and a test of the user's own. The fresh venv takes tinygate from the wheel and only its
dependencies (torch, onnxruntime, ...) from this venv, through a .pth file, so the test needs no network."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.user_code import SCALE_STEP, TWO_HEAD_NET

pytestmark = pytest.mark.slow

MY_TEST = '''
import numpy as np
from safetensors.numpy import load_file


def test_scaled_weights_shrink(scale_weights, float_artifact, variant, gate_check):
    """Asks for the scale_weights step's artifact; measures a figure of its own and records it."""
    mine, base = load_file(scale_weights.path), load_file(float_artifact.path)
    ratio = float(np.linalg.norm(mine["trunk.0.weight"]) / np.linalg.norm(base["trunk.0.weight"]))
    gate_check("weight_norm_ratio", ratio, "<=", 0.51)
'''


def _onnx_classifier(path: Path) -> None:
    """A 16-32-5 MLP written with onnx.helper: a model no tinygate test has seen."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1, b1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32), rng.normal(0, 0.1, 32).astype(np.float32)
    w2, b2 = rng.normal(0, 0.3, (32, 5)).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["features", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["scores"])],
        "mlp", [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 5])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> tuple[Path, dict]:
    """A venv holding tinygate from a freshly built wheel; its dependencies come from this venv's site-packages."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"  # build from a copy, so that build/ and *.egg-info never land in the checkout
    shutil.copytree(REPO / "tinygate", src / "tinygate", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    built = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"),
                  str(src)], root, dict(os.environ))
    assert built.returncode == 0, built.output
    wheel = next((root / "dist").glob("tinygate-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                      "--no-index", "--quiet", str(wheel)], root, dict(os.environ))
    assert installed.returncode == 0, installed.output
    # a user's laptop: not CI (where --gate-strict is the default and a project without a baseline fails)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "PYTHONPATH", "CI"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = _run([str(venv / "bin" / "python"), "-c", "import tinygate; print(tinygate.__file__)"], root, env)
    assert where.stdout.strip().startswith(str(venv)), where.output  # the wheel's copy, not this checkout
    return venv, env


def _project(root: Path) -> Path:
    """A user's repository: two models and their data, nothing else."""
    import torch
    from safetensors.torch import save_file

    proj = root / "their_repo"
    (proj / "models").mkdir(parents=True)
    (proj / "data").mkdir()
    _onnx_classifier(proj / "models" / "mlp.onnx")
    rng = np.random.default_rng(1)
    feats = rng.normal(0, 1, (64, 16)).astype(np.float32)
    np.savez(proj / "data" / "mlp_eval.npz", inputs=feats, labels=rng.integers(0, 5, 64))
    np.savez(proj / "data" / "mlp_calib.npz", inputs=rng.normal(0, 1, (16, 16)).astype(np.float32))
    (proj / "nets.py").write_text(TWO_HEAD_NET)
    sys.path.insert(0, str(proj))
    try:
        import nets

        torch.manual_seed(0)
        save_file(nets.build().state_dict(), proj / "models" / "twohead.safetensors")
    finally:
        sys.path.remove(str(proj))
        sys.modules.pop("nets", None)
    np.savez(proj / "data" / "maps.npz", inputs=rng.random((12, 1, 12, 12), dtype=np.float32))
    return proj


def _printed_commands(output: str) -> list[str]:
    """The commands init prints for the user to paste."""
    return [m.group(1).strip() for m in re.finditer(r"^#\s+(?:run the gate.*?|or, from anywhere): (.+)$", output, re.M)]


def test_wheel_gates_a_users_repository(fresh_venv, tmp_path):
    venv, env = fresh_venv
    proj = _project(tmp_path)
    tinygate = str(venv / "bin" / "tinygate")
    for cmd in ([tinygate, "--help"], [tinygate, "init", "--help"], [tinygate, "check", "--help"],
                [tinygate, "accept", "--help"], [tinygate, "compare", "--help"]):
        assert _run(cmd, proj, env).returncode == 0, cmd

    onnx_init = _run([tinygate, "init", "models/mlp.onnx", "--data", "data/mlp_eval.npz",
                      "--calibration", "data/mlp_calib.npz"], proj, env)
    assert onnx_init.returncode == 0, onnx_init.output
    torch_init = _run([tinygate, "init", "models/twohead.safetensors", "--factory", "nets:build",
                       "--output-names", "score,embedding", "--data", "data/maps.npz"], proj, env)
    assert torch_init.returncode == 0, torch_init.output
    for made in ("gate.toml", "conftest.py", "model_tests/test_gate.py", "fixtures/README.md", "pyproject.toml",
                 "tox.ini"):
        assert (proj / made).is_file(), made
    commands = _printed_commands(torch_init.stdout)
    assert len(commands) == 2 and commands[0] == "tinygate check", torch_init.stdout

    # a step and a test of the user's own
    (proj / "my_steps.py").write_text(SCALE_STEP)
    (proj / "model_tests" / "test_mine.py").write_text(MY_TEST)
    with open(proj / "gate.toml", "a", encoding="utf-8") as fh:
        fh.write('\n[models.twohead.variants.scaled]\nsteps = [{ step = "scale_weights", scale = 0.5 }]\n'
                 "budgets = { max_size_kb = 100 }\n\n[steps]\nscale_weights = \"my_steps:scale_weights\"\n")

    sub = proj / "models"  # a subfolder of the project
    for command, cwd in zip(commands, (proj, sub), strict=True):  # each once: one from the root, one from a subfolder
        shutil.rmtree(proj / "reports" / "latest", ignore_errors=True)
        ran = _run([*shlex.split(command), "-v"], cwd, env)  # -v: the user's own test is named in the output
        assert ran.returncode == 0, f"{command} in {cwd}:\n{ran.output}"
        results = json.loads((proj / "reports" / "latest" / "results.json").read_text())
        gated = {c["model"] for c in results["checks"]}
        assert gated == {"mlp", "twohead"}, (command, cwd, gated)  # theirs only, never tinygate's own models
        mine = [c for c in results["checks"] if c["check"] == "weight_norm_ratio"]
        assert [c["verdict"] for c in mine] == ["pass"] and 0.49 < mine[0]["value"] < 0.51, mine
        assert any(c["variant"] == "scaled" and c["check"] == "max_size_kb" for c in results["checks"])
        assert "test_mine.py::test_scaled_weights_shrink[twohead-scaled] PASSED" in ran.output
    assert not (sub / "reports").exists() and not (REPO / "their_repo").exists()

    # the library core, without pytest, from the user's folder
    judged = _run([str(venv / "bin" / "python"), "-c",
                   "import tinygate; print(sorted({c.verdict for c in tinygate.Gate('gate.toml').judge()}))"],
                  proj, env)
    assert judged.returncode == 0 and judged.stdout.strip() == "['pass']", judged.output

    accept = _run([tinygate, "accept", "--reason", "first release"], sub, env)
    assert accept.returncode == 0 and "baseline accepted" in accept.output, accept.output
    compare = _run([tinygate, "compare"], sub, env)
    assert compare.returncode == 0 and "twohead-scaled" in compare.stdout and "size_kb" in compare.stdout, \
        compare.output
