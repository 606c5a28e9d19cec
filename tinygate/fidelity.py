"""Fidelity to the float model, for models with no labels: per output, over the evaluation inputs.

Output SQNR (dB) = 10 log10(sum ref^2 / sum (out - ref)^2) over every sample; the largest absolute
difference; the mean and lowest per-sample cosine similarity (embeddings); top-1 agreement along the class
axis: one decision per sample for (N, C) logits, one per location for a (N, C, H, W) class map, one per step
for (N, T, C) sequences (the axis is the output's `class_axis` in the config, else inferred from its rank and
stated in the report). A NaN anywhere makes every figure NaN, which fails a budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OutputFidelity:
    output: str
    sqnr_db: float
    max_abs_diff: float
    cosine: float  # mean over samples
    min_cosine: float
    top1_agreement_pct: float
    samples_db: tuple[float, ...] = ()  # each sample's output SQNR (dB, within +-SAMPLE_CAP_DB): paired comparisons
    class_axis: int = 1  # the axis of the output (batch axis 0) that top-1 agreement takes the argmax along

    def figures(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k not in ("output", "samples_db")}


class Accumulator:
    """Streams (reference, candidate) output pairs one sample at a time, so no evaluation set is held whole."""

    def __init__(self, name: str, class_axis: int | None = None) -> None:
        self.name = name
        self.class_axis = class_axis  # None: inferred from the output's rank
        self.signal = self.noise = self.max_abs = 0.0
        self.cosines: list[float] = []
        self.samples: list[float] = []
        self.agree: list[float] = []  # per sample: the share of its decisions (locations, steps) that agree
        self.finite = True

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        if self.class_axis is None:
            self.class_axis = infer_class_axis(reference.ndim)
        if not 1 <= self.class_axis < max(reference.ndim, 2):
            raise ValueError(f"output {self.name!r}: class_axis {self.class_axis} is not an axis of its "
                             f"{reference.ndim}-D outputs (axis 0 is the batch)")
        for ref, out in zip(reference.astype(np.float64), candidate.astype(np.float64), strict=True):
            axis = self.class_axis - 1 if ref.ndim else None
            decided = np.argmax(ref, axis=axis) == np.argmax(out, axis=axis)
            ref, out = ref.ravel(), out.ravel()
            if not (np.isfinite(ref).all() and np.isfinite(out).all()):
                self.finite = False
                continue
            diff = out - ref
            self.signal += float(ref @ ref)
            self.noise += float(diff @ diff)
            self.max_abs = max(self.max_abs, float(np.abs(diff).max(initial=0.0)))
            self.cosines.append(cosine(ref, out))
            one = sqnr_db(float(ref @ ref), float(diff @ diff))
            self.samples.append(max(-SAMPLE_CAP_DB, min(SAMPLE_CAP_DB, one)))
            self.agree.append(float(np.mean(decided)))

    def result(self) -> OutputFidelity:
        if not self.finite or not self.cosines:
            nan = float("nan")
            return OutputFidelity(self.name, nan, nan, nan, nan, nan)
        return OutputFidelity(self.name, sqnr_db(self.signal, self.noise), self.max_abs,
                              float(np.mean(self.cosines)), float(np.min(self.cosines)),
                              100.0 * float(np.mean(self.agree)), tuple(self.samples), int(self.class_axis))


SAMPLE_CAP_DB = 200.0  # a sample's SQNR when its outputs are identical: finite, so paired statistics stay numbers


def infer_class_axis(ndim: int) -> int:
    """Where the classes are when the config does not say: (N, C) and (N, C, H, W) on axis 1, (N, T, C) last."""
    return 2 if ndim == 3 else 1


def sqnr_db(signal: float, noise: float) -> float:
    """Signal-to-noise in dB; identical outputs are +inf, a zero reference with any error is -inf."""
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; two all-zero vectors are identical (1), one all-zero vector is unrelated (0)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def worst(results: list[OutputFidelity], figure: str, kind: str) -> OutputFidelity:
    """The output that does worst on one figure ("min" budgets: the lowest value; "max": the highest);
    a NaN figure is the worst of all."""
    def badness(r: OutputFidelity) -> float:
        value = getattr(r, figure)
        return math.inf if math.isnan(value) else (-value if kind == "min" else value)
    return max(results, key=badness)
