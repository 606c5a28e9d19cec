"""The bundled eval sets are the same bytes on every CPU: their hash keys the baseline's per-sample comparisons,
and a CI host with other vector units must not turn into "the baseline was evaluated on different data"."""

from __future__ import annotations

import numpy as np

from tinygate.zoo import tinybeauty


def _last_bit_off(x, y):
    """np.power, wrong in its last bit everywhere, as another CPU's vectorized pow is in some places."""
    out = np.power(x, y)
    return np.nextafter(out, np.where(np.arange(out.size).reshape(out.shape) % 2 == 0, np.inf, -np.inf))


def test_the_retouch_teachers_targets_do_not_change_with_the_last_bit_of_pow():
    inputs = tinybeauty.crops(tinybeauty.EVAL_PHOTOS, 4, tinybeauty.SIZE, seed=2024)
    for image in inputs:
        image = image.transpose(1, 2, 0)
        assert np.array_equal(tinybeauty.teacher(image), tinybeauty.teacher(image, power=_last_bit_off))


def test_the_guard_fails_on_the_old_teacher_that_took_pow_in_float32(monkeypatch):
    """The test above can fail: with gamma taken in float32 and unrounded, as before, the targets change."""
    monkeypatch.setattr(tinybeauty, "gamma", lambda x, power: power(x, np.float32(tinybeauty.GAMMA)))
    image = tinybeauty.crops(tinybeauty.EVAL_PHOTOS, 1, tinybeauty.SIZE, seed=2024)[0].transpose(1, 2, 0)
    assert not np.array_equal(tinybeauty.teacher(image), tinybeauty.teacher(image, power=_last_bit_off))


def test_no_eval_value_of_pow_lies_within_8_ulps_of_the_gamma_grids_rounding_boundary():
    """The margin the rounding needs: another CPU's pow, off by a few ulps, lands on the same grid point for every
    value of the bundled eval set (a new scikit-image or numpy that moves a value near a boundary fails here)."""
    inputs = tinybeauty.crops(tinybeauty.EVAL_PHOTOS, 100, tinybeauty.SIZE, seed=2024)
    margins = []
    for image in inputs:
        scaled = np.power(tinybeauty.smoothed(image.transpose(1, 2, 0)).astype(np.float64),
                          tinybeauty.GAMMA) * tinybeauty.GAMMA_GRID
        scaled = scaled[scaled > 0]  # 0 ** GAMMA is 0 on every CPU
        margins.append(np.min(np.abs(scaled - np.floor(scaled) - 0.5) / np.spacing(scaled)))
    assert min(margins) >= 8, min(margins)
