"""TinyBeauty: a tiny image-to-image CNN (256x256 RGB, residual output) and its retouch teacher.

The teacher is a deterministic "retouch" built from scikit-image filters: edge-preserving
total-variation smoothing followed by a tone change (gamma, contrast curve, warm tint). Training
photos and evaluation photos are disjoint scikit-image sample photos, so nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinygate.data import Dataset, deterministic

SIZE = 256
TRAIN_PHOTOS = ("astronaut", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
EVAL_PHOTOS = ("coffee", "stereo_motorcycle")
TV_WEIGHT = 0.04
GAMMA = 0.8
TINT = (1.05, 1.0, 0.93)


class TinyBeauty(nn.Module):
    """Six 3x3 convs, 24 channels wide (22,155 parameters); predicts a residual added to the input."""

    def __init__(self, width: int = 24, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def build() -> TinyBeauty:
    """Factory named in gate.toml: the architecture, without weights."""
    return TinyBeauty()


def teacher(image: np.ndarray, power=np.power) -> np.ndarray:
    """Retouch one HxWx3 float image in [0, 1]: TV smoothing, then gamma, S-curve and warm tint."""
    tone = gamma(smoothed(image), power)
    tone = tone + 0.15 * tone * (1.0 - tone) * (tone - 0.5) * 4.0  # gentle S-curve
    return np.clip(tone * np.asarray(TINT), 0.0, 1.0).astype(np.float32)


def smoothed(image: np.ndarray) -> np.ndarray:
    """The teacher's TV smoothing, clipped to [0, 1]: arithmetic and sqrt (exactly rounded) and numpy's pairwise
    sums (a fixed order) only, so the same bytes on every CPU."""
    from skimage.restoration import denoise_tv_chambolle

    return np.clip(denoise_tv_chambolle(image, weight=TV_WEIGHT, channel_axis=-1), 0.0, 1.0)


GAMMA_GRID = 2.0**20


def gamma(x: np.ndarray, power=np.power) -> np.ndarray:
    """x ** GAMMA, the same bytes on every CPU: numpy's pow is vectorized differently by CPU (SVML on AVX-512)
    and its last bit differs between them, which changed the eval set's hash from one CI host to the next. It is
    taken in float64 and rounded to a 2**-20 grid; on the bundled eval set no value lies within 8 float64 ulps of
    a rounding boundary (a test says so), and every later operation is exactly rounded."""
    return np.round(power(x.astype(np.float64), GAMMA) * GAMMA_GRID) / GAMMA_GRID


def load_photo(name: str) -> list[np.ndarray]:
    """A scikit-image sample photo (or stereo pair) as HxWx3 float32 images in [0, 1]."""
    import skimage.data

    images = getattr(skimage.data, name)()
    images = images[:2] if isinstance(images, tuple) else (images,)
    return [np.asarray(im[..., :3], dtype=np.float32) / 255.0 for im in images]


def crops(photos: tuple[str, ...], count: int, size: int, seed: int) -> np.ndarray:
    """`count` random size x size crops (with random flips), NCHW float32, reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    images = [im for name in photos for im in load_photo(name)]
    out = np.empty((count, 3, size, size), np.float32)
    for i in range(count):
        im = images[i % len(images)]
        y = rng.integers(0, im.shape[0] - size + 1)
        x = rng.integers(0, im.shape[1] - size + 1)
        patch = im[y : y + size, x : x + size]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out[i] = patch.transpose(2, 0, 1)
    return out


def with_teacher(inputs: np.ndarray) -> np.ndarray:
    return np.stack([teacher(x.transpose(1, 2, 0)).transpose(2, 0, 1) for x in inputs])


@deterministic
def eval_set() -> Dataset:
    """100 crops of 256x256 from photos never used in training, with the teacher's retouch as target."""
    inputs = crops(EVAL_PHOTOS, 100, SIZE, seed=2024)
    return Dataset(inputs=inputs, targets=with_teacher(inputs))


@deterministic
def calibration_set() -> Dataset:
    """16 crops from the training photos, for static int8 calibration."""
    return Dataset(inputs=crops(TRAIN_PHOTOS, 16, SIZE, seed=7))
