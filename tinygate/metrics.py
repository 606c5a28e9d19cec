"""Quality metrics: scikit-image's PSNR and SSIM per image, accuracy and agreement for classifiers."""

from __future__ import annotations

import numpy as np

# The PSNR of identical images: finite, so that reports and means stay numbers, and above what any real
# difference scores (one 8-bit step in one pixel of a 3x256x256 image is about 101 dB).
PSNR_CAP_DB = 200.0
SCORING_BYTES = 1 << 30  # images scored at once stay under this: one 4K image at a time, 50 of 256x256


def image_scores(outputs: np.ndarray, targets: np.ndarray, workers: int = 1) -> dict[str, np.ndarray]:
    """Per-image PSNR (dB) and SSIM of NCHW outputs against targets, both in [0, 1].

    Outputs are clipped to [0, 1] first, as a displayed image would be; a non-finite output
    scores NaN, which fails every floor. scikit-image's filters release the GIL, so `workers`
    threads score that many images at once (the scores are the same).
    """
    from concurrent.futures import ThreadPoolExecutor

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def one(i: int) -> tuple[float, float]:
        out, ref = outputs[i], targets[i]
        if not np.all(np.isfinite(out)):
            return np.nan, np.nan
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        ref = ref.astype(np.float32)
        with np.errstate(divide="ignore"):  # an exact match is +inf dB: capped, it still meets any floor
            psnr = min(peak_signal_noise_ratio(ref, out, data_range=1.0), PSNR_CAP_DB)
        return psnr, structural_similarity(ref, out, data_range=1.0, channel_axis=0)

    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs for {len(targets)} targets")
    per_image = outputs[0].size * 8 * 12 if len(outputs) else 1  # SSIM's float64 temporaries, about a dozen
    with ThreadPoolExecutor(max(1, min(workers, SCORING_BYTES // per_image))) as pool:
        scores = np.array(list(pool.map(one, range(len(outputs)))), dtype=float).reshape(-1, 2)
    return {"psnr": scores[:, 0], "ssim": scores[:, 1]}


def percentile(values: np.ndarray, q: float) -> float:
    """The q-th percentile, NaN if any value is NaN (a broken sample must not be averaged away)."""
    return float("nan") if np.isnan(values).any() else float(np.percentile(values, q))


def mean(values: np.ndarray) -> float:
    return float(np.mean(values))


def accuracy_pct(predictions: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float(np.mean(predictions == labels))


def agreement_pct(predictions: np.ndarray, reference: np.ndarray) -> float:
    """Share of samples where two models predict the same class, in percent."""
    return 100.0 * float(np.mean(predictions == reference))
