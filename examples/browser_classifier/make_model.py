"""The ONNX seed's scenario at a size this machine trains in seconds: a binary image classifier of about 8 MB
served to browsers, exported to ONNX, for a gate of dynamic int8 in onnxruntime-web with download budgets.

Writes classifier.onnx (float) and eval.npz (inputs, labels) here. The data is scikit-learn's 8x8 digits, scaled
to 3x64x64, labelled "5 or more"; training is seeded and takes about ten seconds on two cores.
Run: python make_model.py
"""

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).parent


def data() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = nn.functional.interpolate(x, size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    return x.numpy(), (digits.target >= 5).astype(np.int64)


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(16 * 32 * 32, 128), nn.ReLU(), nn.Linear(128, 2))


def main() -> None:
    torch.manual_seed(0)
    x, y = data()
    order = np.random.default_rng(0).permutation(len(x))
    train, held = order[:1400], order[1400:]
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(300):
        batch = torch.randint(0, len(train), (64,))
        loss = nn.functional.cross_entropy(net(xt[batch]), yt[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(x[held])).argmax(1).numpy() == y[held]).mean()
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(HERE / "classifier.onnx"), input_names=["image"],
                      output_names=["logits"], dynamo=True, opset_version=18, external_data=False)
    np.savez(HERE / "eval.npz", inputs=x[held], labels=y[held])
    size = (HERE / "classifier.onnx").stat().st_size
    print(f"classifier.onnx: {size / 1e6:.2f} MB, held-out accuracy {100 * accuracy:.1f}% on {len(held)} images")


if __name__ == "__main__":
    main()
