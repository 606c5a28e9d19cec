"""The MIL interpreter refuses, before anything runs, an op attribute value its kernel would compute as something
else (naming the op, the attribute and the value), and computes layer_norm over any axes as Core ML does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinygate.mil import Interpreter, UnsupportedOps

pytestmark = pytest.mark.slow


def _package(tmp_path: Path, build, shape=(1, 2, 4, 4)) -> Path:
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    prog = mb.program(input_specs=[mb.TensorSpec(shape=shape)], opset_version=ct.target.iOS16)(build)
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16,
                       compute_precision=ct.precision.FLOAT32)
    path = tmp_path / "program.mlpackage"
    model.save(str(path))
    return path


def _mb():
    from coremltools.converters.mil import Builder as mb

    return mb


CASES = {
    "upsample_half_pixel_off": (lambda x: _mb().upsample_bilinear(
        x=x, scale_factor_height=2.0, scale_factor_width=2.0, align_corners=False, half_pixel_centers=False),
        "upsample_bilinear half_pixel_centers=False with align_corners=False"),
    "gather_batch_dims": (lambda x: _mb().gather(x=x, indices=np.zeros((1, 2), np.int32), axis=1, batch_dims=1),
                          "gather batch_dims=1"),
    "conv_transpose_same": (lambda x: _mb().conv_transpose(
        x=x, weight=np.ones((2, 2, 3, 3), np.float32), strides=[2, 2], pad_type="same"),
        "conv_transpose pad_type=same"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_attribute_value_not_implemented_is_refused_naming_it(tmp_path, case):
    build, named = CASES[case]
    with pytest.raises(UnsupportedOps) as info:
        Interpreter(_package(tmp_path, lambda x: build(x)))
    assert named in str(info.value)


def test_the_implemented_half_pixel_upsampling_runs(tmp_path):
    import torch

    run = Interpreter(_package(tmp_path, lambda x: _mb().upsample_bilinear(
        x=x, scale_factor_height=2.0, scale_factor_width=2.0, align_corners=False, half_pixel_centers=True)))
    x = np.random.default_rng(0).random((1, 2, 4, 4), dtype=np.float32)
    (out,) = run({run.input_names[0]: x}).values()
    expected = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=2, mode="bilinear",
                                               align_corners=False).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_layer_norm_over_a_leading_axis_scales_by_gamma_along_that_axis(tmp_path):
    gamma, beta = np.array([2.0, -1.0], np.float32), np.array([0.5, 0.25], np.float32)
    run = Interpreter(_package(tmp_path, lambda x: _mb().layer_norm(x=x, axes=[1], gamma=gamma, beta=beta,
                                                                    epsilon=1e-5), shape=(1, 2, 3, 5)))
    x = np.random.default_rng(1).random((1, 2, 3, 5), dtype=np.float32)
    (out,) = run({run.input_names[0]: x}).values()
    norm = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, norm * gamma.reshape(1, 2, 1, 1) + beta.reshape(1, 2, 1, 1), atol=1e-5)
