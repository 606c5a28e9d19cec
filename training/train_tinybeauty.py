"""Train the bundled TinyBeauty model on the retouch teacher; writes weights/tinybeauty.safetensors.

Seeded and deterministic (single-threaded torch), about 6 minutes on 2 CPU cores. The gate never runs
this script: it ships the weights it writes.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.utils.prune
from safetensors.torch import save_model
from skimage.metrics import peak_signal_noise_ratio

from tinygate.zoo import tinybeauty as tb


def training_pairs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole training photos (and grey ones as RGB) with the teacher applied to each, HxWx3."""
    photos = [im for name in tb.TRAIN_PHOTOS for im in tb.load_photo(name)]
    return photos, [tb.teacher(p) for p in photos]


def sample(rng: np.random.Generator, xs, ys, batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    bx, by = [], []
    for _ in range(batch):
        i = rng.integers(len(xs))
        y0 = rng.integers(0, xs[i].shape[0] - size + 1)
        x0 = rng.integers(0, xs[i].shape[1] - size + 1)
        bx.append(xs[i][y0 : y0 + size, x0 : x0 + size].transpose(2, 0, 1))
        by.append(ys[i][y0 : y0 + size, x0 : x0 + size].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(bx)), torch.from_numpy(np.stack(by))


def mean_psnr(outputs: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean([peak_signal_noise_ratio(t, np.clip(o, 0, 1), data_range=1.0)
                          for o, t in zip(outputs, targets, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--l1", type=float, default=2e-6,
                        help="L1 penalty on conv weights: pushes small weights towards zero so that the "
                             "gate's 30%% magnitude pruning costs little quality, as in the seeds")
    parser.add_argument("--out", type=Path, default=Path("weights/tinybeauty.safetensors"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(0)
    xs, ys = training_pairs()
    model = tb.build()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps)
    start = time.time()
    for step in range(args.steps):
        x, y = sample(rng, xs, ys, batch=16, size=48)
        loss = torch.nn.functional.mse_loss(model(x), y)
        penalty = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        opt.zero_grad()
        (loss + args.l1 * penalty).backward()
        opt.step()
        sched.step()
        if step % 250 == 0:
            print(f"step {step:5d}  loss {loss.item():.6f}  psnr~{-10 * np.log10(loss.item()):.2f} dB  "
                  f"{time.time() - start:.0f}s", flush=True)

    ev = tb.eval_set()
    with torch.no_grad():
        out = np.concatenate([model(torch.from_numpy(ev.inputs[i : i + 10])).numpy()
                              for i in range(0, len(ev), 10)])
    identity, learned = mean_psnr(ev.inputs, ev.targets), mean_psnr(out, ev.targets)
    print(f"identity {identity:.2f} dB (must be <= 30), model {learned:.2f} dB (must be >= 35)")
    model.eval()
    pruned = copy.deepcopy(model)
    for m in pruned.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.utils.prune.l1_unstructured(m, "weight", amount=0.3)
    with torch.no_grad():
        out = np.concatenate([pruned(torch.from_numpy(ev.inputs[i : i + 10])).numpy()
                              for i in range(0, len(ev), 10)])
    print(f"after 30% magnitude pruning: {mean_psnr(out, ev.targets):.2f} dB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) in {time.time() - start:.0f}s")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
