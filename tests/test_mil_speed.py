"""How fast the MIL interpreter runs tinybeauty at 256x256 against the torch float model (target: at most
10x). Figures, not assertions: run `pytest tests/test_mil_speed.py --benchmark-enable` to measure."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygate.artifacts import Artifact, load_torch
from tinygate.cache import digest_path
from tinygate.mil import Interpreter

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights/tinybeauty.safetensors"


@pytest.fixture(scope="module")
def tinybeauty():
    torch.set_num_threads(1)
    return load_torch(Artifact("torch", WEIGHTS, digest_path(WEIGHTS), "tinygate.zoo.tinybeauty:build"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)


@pytest.fixture(scope="module")
def interpreter(tinybeauty, image, tmp_path_factory):
    import coremltools as ct

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(tinybeauty, torch.from_numpy(image))
        path = tmp_path_factory.mktemp("speed") / "tinybeauty.mlpackage"
        ct.convert(traced, inputs=[ct.TensorType(name="image", shape=image.shape)], convert_to="mlprogram",
                   minimum_deployment_target=ct.target.iOS16).save(str(path))
    return Interpreter(path)


@pytest.mark.benchmark(group="tinybeauty-256x256")
def test_torch_float_speed(benchmark, tinybeauty, image):
    with torch.inference_mode():
        out = benchmark(lambda: tinybeauty(torch.from_numpy(image)))
    assert out.shape == (1, 3, 256, 256)


@pytest.mark.benchmark(group="tinybeauty-256x256")
def test_mil_interpreter_fp16_speed(benchmark, interpreter, image):
    out = benchmark(lambda: interpreter({"image": image}))
    assert out[interpreter.output_names[0]].shape == (1, 3, 256, 256)
