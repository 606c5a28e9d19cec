"""Properties of the reference quantizer (tinygate.quant), over hypothesis-generated float32 arrays.

Arrays have up to 4 dimensions, magnitudes from subnormals to the edge of float32, and include
constant arrays and arrays with a single outlier.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinygate import quant

ROUND_TRIP_EXAMPLES = 1000 if settings.get_current_profile_name() == "ci" else 200
F32_MAX = float(np.finfo(np.float32).max)
TINY = float(np.finfo(np.float32).smallest_subnormal)

shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)
magnitudes = st.sampled_from([TINY * 8, 1e-30, 1e-6, 1e-2, 1.0, 1e3, 1e20, F32_MAX / 4])


@st.composite
def float_arrays(draw) -> np.ndarray:
    """Finite float32 arrays: random at a drawn magnitude, constant, or random with one outlier."""
    shape = draw(shapes)
    scale = draw(magnitudes)
    kind = draw(st.sampled_from(["random", "constant", "outlier", "any"]))
    if kind == "any":
        return draw(hnp.arrays(np.float32, shape, elements=st.floats(-F32_MAX / 2, F32_MAX / 2, width=32)))
    unit = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1, 1, width=32)))
    arr = (unit.astype(np.float64) * scale).astype(np.float32)
    if kind == "constant":
        arr = np.full(shape, arr.flat[0], np.float32)
    elif kind == "outlier":
        outlier = min(scale * 50.0, F32_MAX / 2) * draw(st.sampled_from([-1.0, 1.0]))
        arr.flat[draw(st.integers(0, arr.size - 1))] = np.float32(outlier)
    return arr


configs = st.fixed_dictionaries({
    "bits": st.integers(2, 8),
    "signed": st.booleans(),
    "symmetric": st.booleans(),
    "restricted": st.booleans(),
})


def _calibrate(w: np.ndarray, cfg: dict, axis: int | None = None) -> quant.QParams:
    restricted = cfg["restricted"] and cfg["symmetric"] and cfg["signed"]
    return quant.calibrate(w, cfg["bits"], cfg["signed"], cfg["symmetric"], axis=axis, restricted=restricted)


@settings(max_examples=ROUND_TRIP_EXAMPLES)
@given(float_arrays(), configs, st.data())
def test_round_trip_error_within_half_a_scale_step_plus_float32_rounding(w, cfg, data):
    axis = data.draw(st.one_of(st.none(), st.integers(0, w.ndim - 1)))
    p = _calibrate(w, cfg, axis)
    q = quant.quantize(w, p)
    err = np.abs(quant.dequantize(q, p).astype(np.float64) - w.astype(np.float64))
    assert np.all(err <= quant.round_trip_tolerance(w, p))


@given(float_arrays(), configs)
def test_every_q_lies_in_the_integer_range(w, cfg):
    p = _calibrate(w, cfg)
    q = quant.quantize(w, p)
    assert q.min() >= p.qmin and q.max() <= p.qmax
    assert p.qmin <= int(p.zero_point) <= p.qmax


@given(float_arrays(), configs, st.floats(1.5, 1e3))
def test_values_outside_the_calibrated_range_saturate_to_its_ends(w, cfg, factor):
    assume(np.abs(w).max() > 0)
    p = _calibrate(w, cfg)
    outside = np.clip(w.astype(np.float64) * factor, -F32_MAX, F32_MAX).astype(np.float32)
    q_out, q_in = quant.quantize(outside, p), quant.quantize(w, p)
    hi, lo = w.argmax(), w.argmin()
    if w.flat[hi] > 0:
        assert q_out.flat[hi] >= q_in.flat[hi] and q_out.flat[hi] <= p.qmax
    if w.flat[lo] < 0:
        assert q_out.flat[lo] <= q_in.flat[lo] and q_out.flat[lo] >= p.qmin
    far = quant.quantize(np.array([F32_MAX, -F32_MAX], np.float32), p)
    assert far.tolist() == [p.qmax, p.qmin] or float(p.scale) * (p.qmax - p.qmin) >= F32_MAX


@given(float_arrays(), configs)
def test_zero_round_trips_exactly(w, cfg):
    p = _calibrate(w, cfg)
    q0 = quant.quantize(np.zeros(1, np.float32), p)
    assert quant.dequantize(q0, p)[0] == 0.0


@given(float_arrays(), configs)
def test_quantizing_a_dequantized_tensor_returns_the_same_q(w, cfg):
    p = _calibrate(w, cfg)
    q = quant.quantize(w, p)
    assert np.array_equal(quant.quantize(quant.dequantize(q, p), p), q)


@given(float_arrays(), configs)
def test_quantization_is_monotonic(w, cfg):
    p = _calibrate(w, cfg)
    order = np.argsort(w.ravel(), kind="stable")
    assert np.all(np.diff(quant.quantize(w, p).ravel()[order]) >= 0)


@given(float_arrays(), configs, st.data())
def test_per_channel_bound_never_exceeds_the_per_tensor_bound(w, cfg, data):
    axis = data.draw(st.integers(0, w.ndim - 1))
    per_tensor, per_channel = _calibrate(w, cfg), _calibrate(w, cfg, axis)
    # An all-zero channel gets S = 1 by convention but round-trips exactly: its bound is 0.
    others = tuple(d for d in range(w.ndim) if d != axis)
    live = np.abs(w).max(axis=others) > 0
    assert np.all(np.where(live, per_channel.scale, 0) <= per_tensor.scale)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad):
    w = np.array([0.5, bad], np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        quant.calibrate(w)
    with pytest.raises(ValueError, match="non-finite"):
        quant.quantize(w, quant.calibrate(np.array([1.0], np.float32)))


def test_all_zero_and_constant_tensors_need_no_division_by_zero():
    with np.errstate(all="raise"):
        zeros = quant.calibrate(np.zeros((3, 2), np.float32))
        assert float(zeros.scale) == 1.0
        const = quant.calibrate(np.full(4, -2.5, np.float32), bits=8, signed=False)
        q = quant.quantize(np.full(4, -2.5, np.float32), const)
        assert np.allclose(quant.dequantize(q, const), -2.5, rtol=0, atol=float(const.scale) / 2)


def test_the_seeds_worked_example_with_an_exact_scale():
    # Seed 004: weights in [-0.8, 1.2], 8 bits: S = 2/255, Z = 102. The seed rounds S to 0.0078 first and
    # gets q(0.6) = 179; with the exact S, 0.6 / S = 76.5 exactly, which rounds half to even to 76.
    w = np.array([-0.8, 0.0, 0.6, 1.2], np.float32)
    p = quant.calibrate(w, bits=8, signed=False)
    assert float(p.scale) == pytest.approx(2 / 255) and int(p.zero_point) == 102
    assert quant.quantize(w, p).tolist() == [0, 102, 178, 255]
    assert abs(float(quant.dequantize(np.array([178]), p)[0]) - 0.6) <= float(p.scale) / 2 + 1e-7


# The properties must be able to fail: run them against deliberately wrong quantizers.

def _floor_quantize(w: np.ndarray, p: quant.QParams) -> np.ndarray:
    w = w.astype(np.float64)
    s, z = p._shape(w.ndim, p.scale.astype(np.float64)), p._shape(w.ndim, p.zero_point)
    return np.clip(np.floor(w / s) + z, p.qmin, p.qmax).astype(np.int64)


def _calibrate_without_widening(w, bits=8, signed=True, symmetric=False, axis=None, restricted=False):
    qmin, qmax = quant.qrange(bits, signed)
    lo, hi = float(w.min()), float(w.max())  # the range is NOT widened to contain 0
    scale = np.float32(max((hi - lo) / (qmax - qmin), 1e-30))
    zero = int(np.clip(qmin - np.rint(lo / float(scale)), qmin, qmax))
    return quant.QParams(np.asarray(scale), np.asarray(zero), qmin, qmax, None)


def test_the_round_trip_property_catches_a_quantizer_that_floors_instead_of_rounding(monkeypatch):
    monkeypatch.setattr(quant, "quantize", _floor_quantize)
    with pytest.raises(AssertionError):
        test_round_trip_error_within_half_a_scale_step_plus_float32_rounding()


def test_the_round_trip_property_catches_a_quantizer_that_does_not_widen_its_range(monkeypatch):
    # Unwidened, an all-positive range needs Z below qmin; clamped, the top of the range saturates.
    monkeypatch.setattr(quant, "calibrate", _calibrate_without_widening)
    with pytest.raises(AssertionError):
        test_round_trip_error_within_half_a_scale_step_plus_float32_rounding()
