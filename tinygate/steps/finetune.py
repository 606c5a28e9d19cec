"""finetune: quality recovery by distillation from the float model on the calibration inputs (no labels needed).

The student (the step's input: a pruned model, or the float model itself before quantization) learns to
reproduce the float model's outputs (mean squared error, Adam, `steps` batches). Zeros a pruning step left stay
zero. Quantization-aware forms use each Conv / Linear weight as the later step will store it, and save it so:
`quantize = "int8"` on the symmetric per-channel grid, gradients straight through the rounding;
`quantize = "palettize"` as a look-up table of 2**nbits values per tensor, whose entries are learned on
assignments fixed by an initial k-means (a `coreml_palettize` with the same nbits then stores it exactly).
Every CHECK_EVERY steps the loss on the whole calibration set is measured and the best weights are kept (the
starting ones included). Deterministic given `seed`: one thread, seeded batch order, deterministic algorithms."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch

from tinygate.artifacts import Artifact, load_torch, save_torch

LAYERS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def int8_per_channel(w: torch.Tensor) -> torch.Tensor:
    """w on the symmetric per-output-channel int8 grid (scale = max|w| / 127): what ONNX Runtime's and Core ML's
    per-channel symmetric quantizers store."""
    scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12) / 127
    scale = scale.view(-1, *([1] * (w.dim() - 1)))
    return torch.round(w / scale).clamp(-127, 127) * scale


def palettized(w: torch.Tensor, nbits: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """w with each value replaced by the nearest of 2**nbits k-means centroids, clustered as coremltools'
    palettizer clusters (scikit-learn KMeans, k-means++, seed 0), so that fine-tuning starts where a plain
    `coreml_palettize` ends; where a mask holds pruned zeros, one centroid is 0 and the zeros keep it."""
    from sklearn.cluster import KMeans

    values = w.detach().flatten()
    live = values if mask is None else values[mask.flatten()]
    k = 2 ** nbits - (0 if mask is None else 1)
    if live.numel() <= k:
        return w
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one thread: the same sums in the same order on every machine
        fitted = KMeans(k, init="k-means++", tol=1e-2, n_init=1, random_state=0).fit(live.double().numpy()[:, None])
    centroids = torch.from_numpy(fitted.cluster_centers_[:, 0]).to(w.dtype)
    if mask is not None:
        centroids = torch.cat([centroids, torch.zeros(1)])
    snapped = centroids[(values[:, None] - centroids[None, :]).abs().argmin(1)].view_as(w)
    return snapped if mask is None else snapped * mask


@contextlib.contextmanager
def _deterministic(seed: int):
    """One thread and deterministic kernels while fine-tuning: the same seed gives the same weights."""
    threads, was = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield np.random.default_rng(seed)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was)


class _AsStored(torch.nn.Module):
    """A weight parametrization: the weight as the later quantization step stores it; pruned zeros held at zero.
    int8: the per-channel grid, gradients straight through the rounding. palettize: each weight's look-up entry
    is fixed by an initial k-means and the 2**nbits entries themselves are learned (Deep Compression's weight
    sharing): re-clustering every step made the loss jump; fixed assignments train smoothly."""

    def __init__(self, mode: str, nbits: int, mask: torch.Tensor | None, w: torch.Tensor) -> None:
        super().__init__()
        self.mode, self.mask = mode, mask
        if mode == "palettize":
            lut, idx = torch.unique(palettized(w.detach(), nbits, mask), return_inverse=True)
            self.lut = torch.nn.Parameter(lut.clone())
            self.register_buffer("idx", idx)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.mode == "palettize":
            q = self.lut[self.idx]
        elif self.mode == "int8":
            q = w + (int8_per_channel(w) - w).detach()
        else:
            q = w
        return q if self.mask is None else q * self.mask


def finetune(src: Artifact, params: dict, ctx, out: Path) -> Path:
    from torch.nn.utils import parametrize

    from tinygate.pipeline import float_artifact

    teacher = load_torch(float_artifact(ctx.model)).eval()
    student = load_torch(src).eval()  # BatchNorm keeps the float model's running statistics
    layers = [m for m in student.modules() if isinstance(m, LAYERS)]
    if not layers:
        raise ValueError(f"{src.factory} has no Conv or Linear layer to fine-tune")
    for m in layers:
        mask = m.weight.detach() != 0
        parametrize.register_parametrization(
            m, "weight", _AsStored(params["quantize"], params["nbits"], None if bool(mask.all()) else mask, m.weight))
    data = ctx.calibration()
    with _deterministic(params["seed"]) as rng:
        optimizer = torch.optim.Adam(student.parameters(), lr=params["lr"])
        order: list[int] = []
        batches = _whole(data)
        with torch.no_grad():
            wanted = [_outputs(teacher(*inputs)) for inputs in batches]
        best = (_loss(student, batches, wanted), copy.deepcopy(student.state_dict()))
        for step in range(1, params["steps"] + 1):
            if len(order) < params["batch"]:
                order += [int(i) for i in rng.permutation(len(data))]
            rows, order = order[:params["batch"]], order[params["batch"]:]
            inputs = _batch(data, rows, params["crop"], rng)
            with torch.no_grad():
                targets = _outputs(teacher(*inputs))
            optimizer.zero_grad()
            loss = _mse(student(*inputs), targets, "mean")
            loss.backward()
            optimizer.step()
            if step % CHECK_EVERY == 0 or step == params["steps"]:  # keep the best on whole calibration inputs
                whole = _loss(student, batches, wanted)
                if whole < best[0]:
                    best = (whole, copy.deepcopy(student.state_dict()))
        student.load_state_dict(best[1])
        for m in layers:  # the weights saved as stored: snapped to the grid or look-up table
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    if not all(bool(torch.isfinite(p).all()) for p in student.parameters()):
        raise ValueError(f"fine-tuning diverged (non-finite weights): lower lr (now {params['lr']})")
    return save_torch(student, out)


CHECK_EVERY = 50  # steps between evaluations of the whole calibration set


def _whole(data) -> list[tuple[torch.Tensor, ...]]:
    return [_batch(data, list(range(start, min(start + 8, len(data)))), 0, None) for start in range(0, len(data), 8)]


def _loss(student, batches, targets) -> float:
    """The distillation loss on every calibration input, whole (not cropped): training on small random windows
    and batches is noisy, so the step keeps the weights that score best here (the starting ones included)."""
    with torch.no_grad():
        return sum(float(_mse(student(*inputs), want, "sum")) for inputs, want in zip(batches, targets, strict=True))


def _mse(y, targets: tuple[torch.Tensor, ...], reduction: str) -> torch.Tensor:
    """The distillation loss: squared error of every output against the float model's, summed over outputs."""
    return sum(torch.nn.functional.mse_loss(o, t, reduction=reduction)
               for o, t in zip(_outputs(y), targets, strict=True))


def _batch(data, rows: list[int], crop: int, rng) -> tuple[torch.Tensor, ...]:
    """The rows of every input as one batch; with `crop`, a random crop x crop window of each row of an image input
    (N x C x H x W): a fully convolutional model learns the same from a 64 x 64 window at a sixteenth of the cost."""
    arrays = [np.asarray(a[rows]) for a in data.arrays()]
    if crop:
        if len(arrays) != 1 or arrays[0].ndim != 4 or min(arrays[0].shape[2:]) < crop:
            raise ValueError(f"crop = {crop} needs one image input (N x C x H x W) at least {crop} x {crop}: "
                             f"got shapes {[a.shape[1:] for a in arrays]}; set crop = 0")
        h, w = arrays[0].shape[2:]
        tops, lefts = rng.integers(0, h - crop + 1, len(rows)), rng.integers(0, w - crop + 1, len(rows))
        arrays = [np.stack([a[j, :, t:t + crop, x:x + crop] for j, (t, x) in enumerate(zip(tops, lefts, strict=True))])
                  for a in arrays]
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _outputs(y) -> tuple[torch.Tensor, ...]:
    """A forward's outputs as a tuple, as the gate reads them (a tensor, or a tuple, list or dict of tensors)."""
    return tuple(y.values()) if isinstance(y, dict) else tuple(y) if isinstance(y, (tuple, list)) else (y,)
