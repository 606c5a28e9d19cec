"""A model the repository has never seen is gated by config alone: a state dict with two inputs and two
outputs and an ONNX file with external data, from architectures defined only here, get their entries from
`python -m tinygate init` and pass the gate; tightened budgets fail it, naming the variant and the worst output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bundled import REPO

pytestmark = pytest.mark.slow

ARCHITECTURES = textwrap.dedent('''
    import torch
    from torch import nn


    class TwoHead(nn.Module):
        """A classifier of an image plus a metadata vector that also returns its embedding."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 24, 3, stride=2),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.embed = nn.Linear(24, 16)
            self.side = nn.Linear(5, 16)
            self.head = nn.Linear(16, 4)

        def forward(self, x, meta):
            e = self.embed(self.body(x)) + self.side(meta)
            return self.head(torch.relu(e)), e


    def two_head():
        return TwoHead()


    class Smoother(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 1, 3, padding=1))

        def forward(self, x):
            return x + self.net(x)
''')

MAKE = textwrap.dedent('''
    import numpy as np, torch
    import unseen

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    torch.save(unseen.two_head().eval().state_dict(), "two_head.pt")
    torch.onnx.export(unseen.Smoother().eval(), (torch.rand(1, 1, 24, 24),), "smoother/smoother.onnx", dynamo=True,
                      input_names=["x"], output_names=["y"], external_data=True)
    for part, n in (("eval", 24), ("calib", 12)):
        np.savez(f"two_head_{part}.npz", image=rng.random((n, 3, 12, 12), dtype=np.float32),
                 meta=rng.random((n, 5), dtype=np.float32))
        np.savez(f"smoother_{part}.npz", inputs=rng.random((n, 1, 24, 24), dtype=np.float32))
''')


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> Path:
    """A folder with the architectures' module, a .pt state dict, an ONNX file with external data, and data."""
    root = tmp_path_factory.mktemp("unseen")
    (root / "unseen.py").write_text(ARCHITECTURES)
    (root / "smoother").mkdir()
    (root / "make.py").write_text(MAKE)
    subprocess.run([sys.executable, "make.py"], cwd=root, env=_env(), check=True, capture_output=True, timeout=300)
    assert list((root / "smoother").iterdir()) != [root / "smoother" / "smoother.onnx"], "expected external data"
    return root


def _env() -> dict:
    """The environment of a fresh process; nothing on PYTHONPATH: the factory module sits beside the config."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT", "PYTHONPATH"))}


def _init(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinygate", "init", *args, "--config", "gate.toml",
                           "--cache-dir", "cache"], cwd=root, env=_env(), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def config(unseen) -> Path:
    two = _init(unseen, "two_head.pt", "--factory", "unseen:two_head", "--input-names", "image,meta",
                "--output-names", "logits,embedding", "--data", "two_head_eval.npz", "--calibration",
                "two_head_calib.npz")
    assert two.returncode == 0, two.stdout + two.stderr
    assert "torchvision" not in two.stderr, two.stderr  # the exporter's log is kept with the artifact, not printed
    one = _init(unseen, "smoother/smoother.onnx", "--data", "smoother_eval.npz", "--calibration",
                "smoother_calib.npz")
    assert one.returncode == 0, one.stdout + one.stderr
    return unseen / "gate.toml"


def _gate(root: Path, config: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(REPO / "model_tests"), "-p", "no:cacheprovider", "-q",
               "--no-gate-strict",
           f"--gate-config={config}", f"--gate-cache-dir={root / 'cache'}", f"--gate-reports-dir={root / 'reports'}"]
    return subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)


def test_init_writes_an_entry_per_model_with_every_variant_that_builds(config):
    from tinygate import config as gate_config

    cfg = gate_config.load(config)
    assert set(cfg.models) == {"two_head", "smoother"}
    assert cfg.models["two_head"].output_names == ("logits", "embedding")
    assert cfg.models["two_head"].inputs == (("image", (1, 3, 12, 12)), ("meta", (1, 5)))
    assert cfg.models["smoother"].source_kind == "onnx"
    assert {v.name for v in cfg.models["smoother"].variants.values()} == {
        "float", "optimized", "fp16", "int8_dynamic", "int8_static"}
    # ORT's static QDQ clips the embedding output (it also feeds a Relu): about 4 dB SQNR, broken, not lossy, so
    # init leaves it out with the reason rather than writing budgets that bless it
    assert "torch_int8" in cfg.models["two_head"].variants
    assert "onnx_int8_static" not in cfg.models["two_head"].variants
    assert re.search(r"# variant onnx_int8_static .* left out: .*too far from the float model: output SQNR "
                     r"-?[\d.]+ dB < 10 dB", config.read_text()), config.read_text()
    # Core ML, for `pytest model_tests -m coreml`: from a PyTorch model only (coremltools converts no ONNX)
    assert {"coreml", "coreml_int8", "coreml_palettize"} <= set(cfg.models["two_head"].variants)
    assert not any(v.backend == "coreml" for v in cfg.models["smoother"].variants.values())
    for variant in cfg.variants:
        assert "max_size_kb" in variant.budgets
        if not variant.is_float:
            assert {"min_output_sqnr_db", "min_output_cosine", "max_output_abs_diff"} <= set(variant.budgets)


def test_the_unseen_models_pass_the_gate_with_the_budgets_init_wrote(unseen, config):
    run = _gate(unseen, config)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary and re.search(r"\d+ passed", summary), summary


def test_tightened_budgets_fail_naming_the_variant_and_the_worst_output(unseen, config):
    text = _set_budget(config.read_text(), "two_head.variants.torch_int8", "min_output_sqnr_db", 150)
    tight = unseen / "tight.toml"  # beside the data: init wrote paths relative to the config
    tight.write_text(_set_budget(text, "smoother.variants.float", "max_size_kb", 1))
    run = _gate(unseen, tight)
    assert run.returncode == 1, run.stdout[-4000:]
    failures = [line.split(" - ")[0] for line in run.stdout.splitlines() if line.startswith("FAILED")]
    assert sorted(f.split("::")[1] for f in failures) == [
        "test_output_sqnr_floor[two_head-torch_int8]", "test_size_budget[smoother-float]"], failures
    assert re.search(r"two_head-torch_int8: output SQNR vs float [\d.]+ dB is below the floor 150 dB "
                     r"\(worst output '(logits|embedding)'", run.stdout), run.stdout[-4000:]


def _set_budget(text: str, table: str, key: str, value: float) -> str:
    """Set one budget in one variant's table of a config init wrote (where paths are relative to it)."""
    blocks = text.split("\n[")
    index = next(i for i, b in enumerate(blocks) if b.startswith(f"models.{table}]"))
    blocks[index], count = re.subn(rf"{key} = [\d.e-]+", f"{key} = {value}", blocks[index])
    assert count == 1, blocks[index]
    return "\n[".join(blocks)


def test_init_refuses_a_state_dict_without_a_factory_in_one_line(unseen):
    run = _init(unseen, "two_head.pt", "--data", "two_head_eval.npz", "--name", "again")
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert "two_head.pt: a state dict needs --factory" in run.stderr.strip().splitlines()[-1]


def test_init_refuses_a_name_already_in_the_config(unseen, config):
    run = _init(unseen, "smoother/smoother.onnx", "--data", "smoother_eval.npz")
    assert run.returncode == 2 and "models.smoother: already exists" in run.stderr, run.stderr


def test_a_model_that_is_already_int8_is_said_so_not_quantized_again(tmp_path):
    """A QDQ model (int8 weights behind DequantizeLinear) given to init: the int8 and fp16 variants are left out
    with one line saying it is already quantized (fp16 would make its scales fp16, an invalid model); the graph
    optimization is measured and written."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (8, 3)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        "already_int8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.float32(0.01), "w_scale"),
         numpy_helper.from_array(np.int8(0), "w_zero")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "q.onnx")
    np.savez(tmp_path / "eval.npz", inputs=rng.random((32, 8), dtype=np.float32))
    np.savez(tmp_path / "calib.npz", inputs=rng.random((8, 8), dtype=np.float32))
    done = _init(tmp_path, "q.onnx", "--data", "eval.npz", "--calibration", "calib.npz")
    assert done.returncode == 0, done.stdout + done.stderr
    left_out = [line for line in done.stdout.splitlines() if "left out" in line]
    assert {line.split()[2] for line in left_out} == {"fp16", "int8_dynamic", "int8_static"}, done.stdout
    assert all("is already quantized (DequantizeLinear nodes)" in line for line in left_out), left_out
    assert "[models.q.variants.optimized]" in done.stdout
