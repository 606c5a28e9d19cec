"""prune: per-layer magnitude pruning of every Conv and Linear weight, made permanent.

torch.nn.utils.prune zeroes the `rate` fraction of each layer's weights with the smallest |w| (the
seeds' rule: at or below the layer's percentile), and prune.remove folds the mask into the weight.
A dense file stays the same size on disk: pruning pays off only once a later step compresses zeros.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune

from tinygate.artifacts import Artifact, load_torch, save_torch


def prune(src: Artifact, params: dict, ctx, out: Path) -> Path:
    model = load_torch(src)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear))]
    if not layers:
        raise ValueError(f"{src.factory} has no Conv or Linear layer to prune")
    for layer in layers:
        torch_prune.l1_unstructured(layer, "weight", amount=params["rate"])
        torch_prune.remove(layer, "weight")
    return save_torch(model, out)
