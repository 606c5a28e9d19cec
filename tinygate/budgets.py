"""Every budget key a variant may set: its direction, unit, the tasks it applies to and its valid range.

Each key is checked by exactly one test in model_tests/ (tests/test_gate_layout.py holds that true).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    key: str
    kind: str  # "min": the measured value must be >= budget; "max": <= budget
    unit: str
    label: str
    tasks: tuple[str, ...]
    low: float = 0.0
    high: float = math.inf

    def holds(self, value: float, budget: float) -> bool:
        """True when the measured value meets the budget; a NaN (unmeasurable) value never does."""
        if value is None or math.isnan(value):
            return False
        return value >= budget if self.kind == "min" else value <= budget


ANY = ("image", "classifier", "fidelity")
BUDGETS: dict[str, Budget] = {b.key: b for b in (
    Budget("max_size_kb", "max", "KB", "size on disk", ANY, low=1e-3),
    Budget("min_weight_sqnr_db", "min", "dB", "worst quantized weight's SQNR", ANY, high=200.0),
    Budget("max_p50_ms", "max", "ms", "median latency", ANY, low=1e-6),
    Budget("max_p95_ms", "max", "ms", "95th-percentile latency", ANY, low=1e-6),
    Budget("max_web_load_ms", "max", "ms", "session creation in the browser", ANY, low=1e-6),
    Budget("max_web_p50_ms", "max", "ms", "median latency in the browser", ANY, low=1e-6),
    Budget("max_web_p95_ms", "max", "ms", "95th-percentile latency in the browser", ANY, low=1e-6),
    Budget("min_speedup", "min", "x", "speedup over the reference variant", ANY, low=1e-3, high=1e3),
    Budget("max_memory_growth_mb", "max", "MB", "peak memory growth during inference", ANY, high=1e6),
    Budget("max_size_ratio", "max", "x float", "size / float size", ANY, low=1e-3, high=10.0),
    Budget("max_transfer_kb", "max", "KB", "compressed transfer size", ANY, low=1e-3),
    Budget("min_psnr_db", "min", "dB", "mean PSNR", ("image",), high=100.0),
    Budget("min_psnr_p5_db", "min", "dB", "5th-percentile PSNR", ("image",), high=100.0),
    Budget("min_ssim", "min", "", "mean SSIM", ("image",), high=1.0),
    Budget("max_psnr_drop_db", "max", "dB", "PSNR drop vs float", ("image",), high=100.0),
    Budget("min_accuracy_pct", "min", "%", "accuracy", ("classifier",), high=100.0),
    Budget("max_accuracy_drop_pct", "max", "pts", "accuracy drop vs float", ("classifier",), high=100.0),
    Budget("min_top1_agreement_pct", "min", "%", "top-1 agreement with float", ("classifier",), high=100.0),
    # Fidelity against the float model on the evaluation inputs, checked on every output (the worst one counts).
    Budget("min_output_sqnr_db", "min", "dB", "output SQNR vs float", ANY, low=-100.0, high=200.0),
    Budget("max_output_abs_diff", "max", "", "largest output difference vs float", ANY),
    Budget("min_output_cosine", "min", "", "mean cosine similarity with float", ANY, low=-1.0, high=1.0),
    Budget("min_output_top1_agreement_pct", "min", "%", "per-output top-1 agreement with float", ANY, high=100.0),
)}

WEB_LATENCY = ("max_web_load_ms", "max_web_p50_ms", "max_web_p95_ms")  # timed in the page: runtime = "web" only
NATIVE_TIMING = ("max_p50_ms", "max_p95_ms", "max_memory_growth_mb", "min_speedup")  # timed in Python: not web

FIDELITY = ("min_output_sqnr_db", "max_output_abs_diff", "min_output_cosine", "min_output_top1_agreement_pct")


QUANTIZING_STEPS = ("ort_int8_dynamic", "ort_int8_static", "torch_int8", "coreml_int8", "coreml_palettize")


def default_weight_sqnr_db(step: str, params: dict) -> float:
    """The weight-SQNR floor of a quantized variant that sets no `min_weight_sqnr_db`: 30 dB for int8
    (uniform int8 of a well-spread tensor gives about 40), 6 dB less for ONNX Runtime's `reduce_range` (7-bit
    weights: each bit is 6 dB), 4.5 dB per bit for a look-up table (18 dB at 4 bits)."""
    if step == "coreml_palettize":
        return 4.5 * params["nbits"]
    return 24.0 if params.get("reduce_range") else 30.0
