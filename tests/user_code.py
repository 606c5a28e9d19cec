"""Code a user of tinygate writes, for the tests that play that user: a label-free network with two outputs
(a score map and a pooled embedding) and a step of their own."""

TWO_HEAD_NET = '''
import torch


class TwoHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.score = torch.nn.Conv2d(8, 2, 1)
        self.embed = torch.nn.Linear(8, 4)

    def forward(self, x):
        h = self.trunk(x)
        return self.score(h), self.embed(h.mean(dim=(2, 3)))


def build():
    return TwoHead()
'''

SCALE_STEP = '''
import tinygate


@tinygate.step(consumes="torch", produces="torch", scale=0.5)
def scale_weights(src, params, ctx, out):
    """A step of the user's own: multiply every weight by `scale`."""
    model = tinygate.load_torch(src)
    for p in model.parameters():
        p.data.mul_(params["scale"])
    return tinygate.save_torch(model, out)
'''

BN_NET = '''
import torch


class BNNet(torch.nn.Module):
    """Convolutions followed by BatchNorm, as most CNNs are: exporters and quantizers fold each pair."""
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def build():
    return BNNet()
'''

SENSITIVE_NET = '''
import torch


class Sensitive(torch.nn.Module):
    """An MLP whose first and last layers each hold a column of huge weights on an input that is always zero: an
    int8 scale stretched to them rounds every useful weight of those layers to 0, per tensor and per channel."""
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 128), torch.nn.Linear(128, 128)
        self.fc3, self.fc4 = torch.nn.Linear(128, 128), torch.nn.Linear(128, 8)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc4(torch.relu(self.fc3(torch.relu(self.fc2(h)))))


def build():
    return Sensitive()
'''


def user_module(root, name: str, source: str):
    """Write a user's module into a project folder and import it from there (as gate.toml's folder would), leaving
    sys.path and sys.modules as they were."""
    import importlib.util

    (root / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
