"""Evaluation and calibration data: what a data source returns, and how it is loaded and hashed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Model inputs (N x input shape without batch), plus image targets or class labels when known."""

    inputs: np.ndarray
    targets: np.ndarray | None = None
    labels: np.ndarray | None = None
    more_inputs: tuple[np.ndarray, ...] = ()  # a model with several inputs: the second, third, ... in order

    def __post_init__(self) -> None:
        """Its digest is kept, so its arrays are read-only: read-only copies of what it was given (a data source's
        own array stays the source's to change); views of an already read-only Dataset (head) are not copied."""
        def frozen(arr):
            if not isinstance(arr, np.ndarray) or not arr.flags.writeable:
                return arr
            arr = arr.copy()
            arr.flags.writeable = False
            return arr
        for name in ("inputs", "targets", "labels"):
            object.__setattr__(self, name, frozen(getattr(self, name)))
        object.__setattr__(self, "more_inputs", tuple(frozen(a) for a in self.more_inputs))

    def __len__(self) -> int:
        return len(self.inputs)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """Every input array, in the model's input order."""
        return (self.inputs, *self.more_inputs)

    def sample(self, i: int) -> tuple[np.ndarray, ...]:
        """Sample i of every input, each with a batch dimension of 1: what a runner takes."""
        return tuple(np.array(a[i:i + 1], order="C") for a in self.arrays())  # a writable copy (torch wants one)

    def head(self, n: int) -> Dataset:
        """The first n samples."""
        return self.take(slice(0, n))

    def take(self, rows: slice) -> Dataset:
        """The samples `rows` selects (every k-th: a share that spans sorted class folders)."""
        targets, labels = (None if a is None else a[rows] for a in (self.targets, self.labels))
        return Dataset(self.inputs[rows], targets, labels, tuple(a[rows] for a in self.more_inputs))

    def digest(self) -> str:
        """A content hash: a baseline or cached evaluation is only valid for identical data. Computed once (the
        arrays are read-only; hashing 150 MB of images on every lookup cost a warm run seconds)."""
        return self._content_hash

    @cached_property
    def _content_hash(self) -> str:
        h = hashlib.sha256()
        named = [("inputs", self.inputs), ("targets", self.targets), ("labels", self.labels)]
        for i, arr in enumerate(self.more_inputs, start=1):
            named.append((f"input{i}", arr))
        for name, arr in named:
            if arr is not None:
                arr = np.ascontiguousarray(arr)
                h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
                h.update(arr.tobytes())
        return h.hexdigest()


def deterministic(source):
    """Mark a data source whose result depends only on its own code, tinygate's and the installed tools (no
    files it reads, no clock, no unseeded randomness): the gate then keeps its Dataset in the verified cache,
    keyed by that code and those versions, instead of calling it in every run (the bundled tinybeauty set is
    4 s of scikit-image denoising)."""
    source.tinygate_deterministic = True
    return source


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImagePrep:
    """How a folder of images becomes model inputs: resized to (height, width) and to `channels`, divided by
    `scale`, normalized with per-channel mean and std, laid out NCHW or NHWC."""

    layout: str
    size: tuple[int, int]
    channels: int
    scale: float = 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


def image_folder(folder: Path, prep: ImagePrep, where: str) -> Dataset:
    """Every image under `folder`, sorted by path; images in subfolders get labels 0, 1, ... by sorted subfolder
    name (the ImageFolder convention), images directly in the folder get none. Symlinks are refused."""
    from skimage.color import gray2rgb, rgb2gray
    from skimage.io import imread
    from skimage.transform import resize

    from tinygate.errors import GateError
    from tinygate.safety import check_image, check_size

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GateError(folder, where, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({p.parent for p in files} - {folder})
    if classes and any(p.parent == folder for p in files):
        raise GateError(folder, where, "mixes images at the top with class subfolders; use one or the other")
    if any(p.parent.parent != folder for p in files if classes):
        raise GateError(folder, where, "class subfolders must hold images directly, one level deep")
    inputs = []
    for path in files:
        if path.is_symlink() or any(p.is_symlink() for p in path.parents if folder in p.parents):
            raise GateError(path, where, "symlinks are refused in an image folder")
        check_size(path)
        check_image(path)
        try:
            img = np.asarray(imread(path), dtype=np.float32)
        except Exception as exc:  # a truncated or corrupt image file
            raise GateError(path, where, f"is not a readable image: {type(exc).__name__}: {exc}") from None
        if img.ndim == 3 and img.shape[-1] in (2, 4):
            img = img[..., :-1]  # alpha (of gray + alpha, or RGBA) is not an input channel
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if img.ndim != 2 and not (img.ndim == 3 and img.shape[-1] == 3):
            raise GateError(path, where, f"decodes to an array of shape {img.shape}, not one gray or color image "
                                         "(a multipage or volume file? give one image per file)")
        if img.ndim == 2 and prep.channels == 3:
            img = gray2rgb(img)
        elif img.ndim == 3 and prep.channels == 1:
            img = rgb2gray(img / prep.scale) * prep.scale  # rgb2gray wants [0, 1]; keep the stored range
        img = img.reshape(*img.shape[:2], prep.channels)
        img = resize(img, prep.size, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
        img = (img / prep.scale - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
        inputs.append(img.transpose(2, 0, 1) if prep.layout == "NCHW" else img)
    labels = np.array([classes.index(p.parent) for p in files]) if classes else None
    return Dataset(np.stack(inputs).astype(np.float32), labels=labels)
