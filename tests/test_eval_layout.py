"""Evaluation (untimed) hands a PyTorch conv net its images in channels-last memory, about twice as fast on
oneDNN, with the same values to float rounding; a model that needs row-major memory (a .view() after a
convolution) still runs, as given. Timing keeps the layout the user's code passes."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tinygate.artifacts import Artifact, runner_all
from tinygate.cache import digest_path

NETS = '''
import torch

SEEN = []


class Net(torch.nn.Module):
    def __init__(self, flatten):
        super().__init__()
        self.conv, self.flatten = torch.nn.Conv2d(3, 8, 3, padding=1), flatten

    def forward(self, x):
        SEEN.append(x.is_contiguous())
        y = torch.relu(self.conv(x))
        return y.view(y.shape[0], -1) if self.flatten else y


def plain():
    return Net(False)


build = plain  # the weights every factory here loads


def flattening():  # y.view() needs row-major memory: channels-last fails here
    return Net(True)


class Slow(Net):
    def forward(self, x):
        import time

        SEEN.append(x.is_contiguous())
        time.sleep(0.5)
        return self.conv(x)


def slow():
    return Slow(False)
'''


@pytest.fixture
def nets(torch_project):
    root = torch_project("layout_nets", NETS, (3, 8, 8), samples=1)
    module = sys.modules["layout_nets"]
    module.SEEN.clear()
    return module, root / "layout_nets.safetensors"


@pytest.mark.parametrize("factory", ["plain", "flattening"])
def test_evaluation_matches_the_model_as_given_and_says_which_layout_ran(nets, factory):
    module, weights = nets
    art = Artifact("torch", weights, digest_path(weights), f"layout_nets:{factory}")
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    given = runner_all(art, 1)(x)[0]
    assert module.SEEN == [True]  # the runner for timing passes the layout as given
    module.SEEN.clear()
    run = runner_all(art, 1, evaluating=True)
    first, second = run(x)[0], run(x)[0]
    np.testing.assert_allclose(first, given, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(first, second)
    assert first.flags.c_contiguous
    if factory == "plain":
        assert module.SEEN == [False, False]  # channels-last, every call
    else:  # failed once in channels-last, then as given for good
        assert module.SEEN == [False, True, True]


def test_a_call_past_the_time_limit_is_not_tried_again_as_given(nets, monkeypatch):
    """Only a model that fails on channels-last memory is run again with its inputs as given; one stopped by the
    time limit fails then, once, rather than taking the limit twice."""
    from tinygate import safety
    from tinygate.errors import GateError

    module, weights = nets
    monkeypatch.setattr(safety, "max_call_seconds", lambda: 0.1)
    run = runner_all(Artifact("torch", weights, digest_path(weights), "layout_nets:slow"), 1, evaluating=True)
    with pytest.raises(GateError, match="ran past 0.1 s"):
        run(np.zeros((1, 3, 8, 8), np.float32))
    assert module.SEEN == [False]
