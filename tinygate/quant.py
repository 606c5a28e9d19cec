"""The reference quantizer: the oracle that tests and artifact checks trust.

Definitions follow the seeds: S = (max - min) / (qmax - qmin) (= (2^b - 1) levels), Z = qmin - round(min / S)
(for unsigned, Z = round(-min / S)), q = clamp(round(w / S) + Z, qmin, qmax), w' = S (q - Z).

- The calibrated range is widened to contain 0, so zero is exactly representable (w = 0 -> q = Z -> w' = 0).
- Rounding is half to even (numpy.rint), as torch and ONNX Runtime round.
- S is a float32 (the type every format stores); when the float32 nearest to the exact scale is smaller,
  the next float32 up is used, so the calibrated range always fits in [qmin, qmax].
- An all-zero range uses S = 1 (any scale represents zero exactly); a range so small that S would
  underflow float32 uses the smallest positive float32.
- q is computed as the ONNX QuantizeLinear definition reads: rint(float32(w) / float32(S)), one correctly
  rounded float32 division (not a multiplication by 1/S, which torch does and which can land on the
  other side of a tie).
- Non-finite input is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TINY = np.float32(np.finfo(np.float32).smallest_subnormal)


@dataclass(frozen=True)
class QParams:
    """Scale and zero point (scalars, or 1-D along `axis`), and the integer range."""

    scale: np.ndarray  # float32
    zero_point: np.ndarray  # int64
    qmin: int
    qmax: int
    axis: int | None = None

    def _shape(self, ndim: int, arr: np.ndarray) -> np.ndarray:
        if self.axis is None:
            return arr
        shape = [1] * ndim
        shape[self.axis] = -1
        return arr.reshape(shape)

    def bound(self, ndim: int) -> np.ndarray:
        """S/2, broadcastable against a tensor of `ndim` dimensions: the round-trip error bound."""
        return self._shape(ndim, self.scale.astype(np.float64) / 2)


def qrange(bits: int, signed: bool, restricted: bool = False) -> tuple[int, int]:
    """[qmin, qmax] for `bits`; `restricted` drops the most negative signed level (symmetric around 0)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in [2, 8], got {bits}")
    if signed:
        return (-(2 ** (bits - 1)) + int(restricted), 2 ** (bits - 1) - 1)
    return 0, 2**bits - 1


def _float32_at_least(exact: np.ndarray) -> np.ndarray:
    with np.errstate(under="ignore"):  # a subnormal scale is legitimate here
        s = np.asarray(exact).astype(np.float32)
        s = np.where(s.astype(np.float64) < exact, np.nextafter(s, np.float32(np.inf)), s)
    return np.maximum(s, TINY).astype(np.float32)


def calibrate(w: np.ndarray, bits: int = 8, signed: bool = True, symmetric: bool = False,
              axis: int | None = None, restricted: bool = False,
              value_range: tuple[float, float] | None = None) -> QParams:
    """Scale and zero point for `w` (or for an explicit (min, max) range), per tensor or along `axis`."""
    w = _finite(w)
    qmin, qmax = qrange(bits, signed, restricted)
    if value_range is not None:
        lo, hi = np.float64(value_range[0]), np.float64(value_range[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
            raise ValueError(f"value_range must be finite with min <= max, got {value_range}")
    elif axis is None:
        lo, hi = np.float64(w.min()), np.float64(w.max())
    else:
        axis = axis % w.ndim
        others = tuple(d for d in range(w.ndim) if d != axis)
        lo, hi = w.min(axis=others).astype(np.float64), w.max(axis=others).astype(np.float64)
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)  # widen to contain zero
    if symmetric:
        amax = np.maximum(-lo, hi)
        exact = amax / (qmax if restricted else (qmax - qmin) / 2)
        zero = np.zeros_like(amax, dtype=np.int64) + (0 if signed else (qmin + qmax + 1) // 2)
        scale = np.where(amax == 0, np.float32(1), _float32_at_least(exact))
    else:
        exact = (hi - lo) / (qmax - qmin)
        scale = np.where(hi == lo, np.float32(1), _float32_at_least(exact))
        zero = qmin - np.rint(lo / scale.astype(np.float64)).astype(np.int64)
    zero = np.clip(zero, qmin, qmax).astype(np.int64)
    return QParams(np.asarray(scale, np.float32), np.asarray(zero, np.int64), qmin, qmax, axis)


def quantize(w: np.ndarray, p: QParams) -> np.ndarray:
    """q = clamp(rint(w / S) + Z, qmin, qmax), as int64; w / S is one float32 division."""
    w = _finite(w).astype(np.float32)
    s = p._shape(w.ndim, p.scale.astype(np.float32))
    z = p._shape(w.ndim, p.zero_point)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        # far outside the range w / S is inf: it saturates; a scale of 0 (an all-zero tensor, as coremltools
        # stores one) maps 0 to the zero point
        steps = np.where(w == 0, 0.0, np.rint(w / s)).astype(np.float64)
    return np.clip(steps + z, p.qmin, p.qmax).astype(np.int64)


def dequantize(q: np.ndarray, p: QParams) -> np.ndarray:
    """w' = S (q - Z), computed in float64 and returned as float32 (what a runtime's dequantize yields)."""
    s = p._shape(q.ndim, p.scale.astype(np.float64))
    z = p._shape(q.ndim, p.zero_point)
    return (s * (q.astype(np.int64) - z)).astype(np.float32)


def round_trip_tolerance(w: np.ndarray, p: QParams) -> np.ndarray:
    """The exact bound on |dequantize(quantize(w)) - w| for w inside the calibrated range:
    S/2 from rounding to the grid; plus half a float32 ulp of w / S, times S (the float32 division may
    round across a tie: at most |w| 2^-24); plus half a float32 ulp of the result from returning float32;
    plus the float64 product's rounding (2^-52 relative)."""
    w64 = np.abs(w.astype(np.float64))
    half_scale = p.bound(w.ndim)
    result_mag = w64 + half_scale
    ulp32 = np.spacing(result_mag.astype(np.float32)).astype(np.float64)
    return half_scale + w64 * 2.0**-24 + ulp32 / 2 + result_mag * 2.0**-52


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; +inf when the two are equal."""
    ref = reference.astype(np.float64)
    noise = np.sum((ref - approx.astype(np.float64)) ** 2)
    signal = np.sum(ref**2)
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return float(10 * np.log10(signal / noise))


def _finite(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype.kind != "f":
        w = w.astype(np.float32)
    if not np.all(np.isfinite(w)):
        raise ValueError("cannot quantize non-finite values (NaN or Inf)")
    return w
