"""Train the bundled digits classifier; writes weights/digits.safetensors. Seeded, about 30 s on 2 cores."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_model

from tinygate.zoo import digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("weights/digits.safetensors"))
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    train_x, train_y, test_x, test_y = digits.split()
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y).long()
    model = digits.build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % 10 == 9:
            model.eval()
            with torch.no_grad():
                acc = (model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean()
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out accuracy {100 * acc:.2f}%")
    model.eval()
    with torch.no_grad():
        acc = float(np.mean(model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y))
    print(f"held-out accuracy {100 * acc:.2f}% on {len(test_y)} images (must be >= 97%)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
