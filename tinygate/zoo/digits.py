"""Digits: a small CNN classifier on scikit-learn's bundled 8x8 digits (1,797 images)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tinygate.data import Dataset, deterministic

HELD_OUT = 500
SPLIT_SEED = 0


class DigitsNet(nn.Module):
    """Two 3x3 convs, a 2x2 pool and a linear head: about 6,000 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def build() -> DigitsNet:
    """Factory named in gate.toml: the architecture, without weights."""
    return DigitsNet()


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed stratified split: (train_x, train_y, test_x, test_y), images scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        x, digits.target, test_size=HELD_OUT, random_state=SPLIT_SEED, stratify=digits.target)
    return train_x, train_y, test_x, test_y


@deterministic
def eval_set() -> Dataset:
    """The 500 held-out digits with their labels."""
    _, _, x, y = split()
    return Dataset(inputs=x, labels=y.astype(np.int64))


@deterministic
def calibration_set() -> Dataset:
    """The first 64 training digits, for static int8 calibration."""
    x, _, _, _ = split()
    return Dataset(inputs=x[:64])
