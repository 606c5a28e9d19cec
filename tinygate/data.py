"""Evaluation and calibration data: what a data source returns, and how it is loaded and hashed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Model inputs (N x input shape without batch), plus image targets or class labels when known."""

    inputs: np.ndarray
    targets: np.ndarray | None = None
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def digest(self) -> str:
        """A content hash: a baseline or cached evaluation is only valid for identical data."""
        h = hashlib.sha256()
        for name in ("inputs", "targets", "labels"):
            arr = getattr(self, name)
            if arr is not None:
                arr = np.ascontiguousarray(arr)
                h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
                h.update(arr.tobytes())
        return h.hexdigest()
