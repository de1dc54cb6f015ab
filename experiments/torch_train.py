"""The reproduction's models trained with the ``torch.optim`` front-end.

The same MLP and residual CNN as :mod:`experiments.models` (same layers and
initialisation), as ``torch.nn`` modules, trained with :class:`lowrank_ggn.optim.torch.Ginger` or
:class:`~lowrank_ggn.optim.torch.QNG` fed with the sampled-label gradient of
Eq 8 (or with ``torch.optim.SGD``/``Adam``)::

    python -m experiments.torch_train --dataset digits --model cnn --optimizer ginger --lr 0.1
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from torch import nn

from experiments.data import load
from lowrank_ggn.optim.torch import QNG, Ginger
from lowrank_ggn.optim.torch_likelihoods import sampled_label_gradient

__all__ = ["MLP", "ResidualCNN", "train"]


def _he_init(module: nn.Module, scale: float = 1.0) -> None:
    """Initialise as :mod:`experiments.models`: He-normal weights times ``scale``, zero biases."""
    fan_in = module.weight[0].numel()
    with torch.no_grad():
        module.weight.normal_(0.0, scale * (2.0 / fan_in) ** 0.5)
        module.bias.zero_()


class MLP(nn.Module):
    """Two hidden layers of 128 ReLU units."""

    def __init__(self, n_in: int, n_out: int, width: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, n_out)
        )
        for i, layer in enumerate(self.net[::2]):
            _he_init(layer, 0.5 if i == 2 else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits."""
        return self.net(x.flatten(1))


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1)
        self.b = nn.Conv2d(c, c, 3, padding=1)
        _he_init(self.a)
        _he_init(self.b, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class ResidualCNN(nn.Module):
    """Stem (8 channels), residual block at 8×8, strided conv to 16 channels, residual block at 4×4, pooling."""

    def __init__(self, n_out: int, c1: int = 8, c2: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, c1, 3, padding=1)
        self.block1 = _Block(c1)
        self.down = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.block2 = _Block(c2)
        self.fc = nn.Linear(c2, n_out)
        _he_init(self.stem)
        _he_init(self.down)
        _he_init(self.fc, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits of NCHW images."""
        h = self.block1(torch.relu(self.stem(x)))
        h = self.block2(torch.relu(self.down(h)))
        return self.fc(h.mean(dim=(2, 3)))


def _loss(outputs: torch.Tensor, y: torch.Tensor, likelihood: str) -> torch.Tensor:
    if likelihood == "bernoulli":
        return nn.functional.binary_cross_entropy_with_logits(outputs[:, 0], y.float())
    return nn.functional.cross_entropy(outputs, y)


def _accuracy(outputs: torch.Tensor, y: torch.Tensor, likelihood: str) -> float:
    pred = (outputs[:, 0] > 0).long() if likelihood == "bernoulli" else outputs.argmax(1)
    return float((pred == y).float().mean())


def train(
    dataset: str = "digits",
    model: str = "mlp",
    optimizer: str = "ginger",
    lr: float = 0.1,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    **options: Any,
) -> dict[str, list[float]]:
    """Train one model and return per-epoch validation accuracy and training loss.

    ``options`` go to the optimiser (``rank``, ``damping``, ``decay``, ...).
    """
    torch.manual_seed(seed)
    ds = load(dataset)
    x_train, y_train = torch.tensor(ds.x_train), torch.tensor(ds.y_train, dtype=torch.long)
    x_val, y_val = torch.tensor(ds.x_val), torch.tensor(ds.y_val, dtype=torch.long)
    if model == "cnn":
        x_train, x_val = x_train.reshape(-1, 1, 8, 8), x_val.reshape(-1, 1, 8, 8)
        net: nn.Module = ResidualCNN(ds.num_outputs)
    else:
        net = MLP(x_train[0].numel(), ds.num_outputs)
    params = list(net.parameters())
    if optimizer == "ginger":
        opt: torch.optim.Optimizer = Ginger(params, lr=lr, **options)
    elif optimizer == "qng":
        opt = QNG(params, lr=lr, **options)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99))
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    curvature_based = isinstance(opt, Ginger | QNG)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"val_acc": [], "train_loss": []}
    n = x_train.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        losses = []
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            outputs = net(x_train[idx])
            d = sampled_label_gradient(outputs, params, ds.likelihood, generator=gen) if curvature_based else None
            loss = _loss(outputs, y_train[idx], ds.likelihood)
            opt.zero_grad()
            loss.backward()
            if curvature_based:
                opt.step(curvature=d)
            else:
                opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            history["val_acc"].append(_accuracy(net(x_val), y_val, ds.likelihood))
        history["train_loss"].append(float(np.min(losses)))
    return history


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m experiments.torch_train", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", choices=("digits", "cancer"))
    parser.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    parser.add_argument("--optimizer", default="ginger", choices=("ginger", "qng", "adam", "momentum"))
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rank", type=int, default=None)
    args = parser.parse_args(argv)
    options = {} if args.rank is None or args.optimizer not in ("ginger", "qng") else {"rank": args.rank}
    hist = train(args.dataset, args.model, args.optimizer, args.lr, epochs=args.epochs, **options)
    for epoch, (acc, loss) in enumerate(zip(hist["val_acc"], hist["train_loss"], strict=True), 1):
        print(f"epoch {epoch:3d}  validation accuracy {100 * acc:6.2f}%  min training loss {loss:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
