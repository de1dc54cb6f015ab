"""
Training a CNN with torch.optim: Ginger on the digits
======================================================

A complete training loop with :class:`lowrank_ggn.optim.torch.Ginger` on
scikit-learn's digits: a small convolutional network, the sampled-label
gradient of Eq 8 from
:func:`lowrank_ggn.optim.torch_likelihoods.sampled_label_gradient` passed to
``step``, parameter groups (weight decay on the weights only), a learning-rate
scheduler, and momentum SGD as the baseline. The last sections look at the
per-block curvature states and checkpoint the optimiser with
``state_dict()``.
"""

# %%
# Data and model
# --------------
import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from lowrank_ggn.optim.torch import Ginger
from lowrank_ggn.optim.torch_likelihoods import sampled_label_gradient

QUICK = os.environ.get("LOWRANK_GGN_QUICK", "0") == "1"  # set when the documentation is built
EPOCHS, BATCH = (6 if QUICK else 25), 64
torch.set_num_threads(1)  # small tensors: threads only contend

x, y = load_digits(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, stratify=y, random_state=0)
mean, std = x_train.mean(), x_train.std()
x_train, x_val = (torch.tensor((a - mean) / std, dtype=torch.float32).reshape(-1, 1, 8, 8) for a in (x_train, x_val))
y_train, y_val = torch.tensor(y_train), torch.tensor(y_val)


def make_model(seed=0):
    """Two 3×3 convolutions (8 and 16 channels, the second strided to 4×4) and a linear classifier."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


# %%
# The optimiser
# -------------
# Every parameter tensor is one block with its own rank-τ curvature state
# (``blocks="param"``, the default). Parameter groups set options per group:
# here decoupled weight decay on the weights and none on the biases. The
# learning rate follows a cosine schedule from ``torch.optim.lr_scheduler``,
# as for any ``torch.optim`` optimiser.


def make_ginger(model):
    """Ginger with weight decay on the weights and none on the biases."""
    weights = [p for p in model.parameters() if p.ndim > 1]
    biases = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": weights, "weight_decay": 1e-4}, {"params": biases, "weight_decay": 0.0}]
    return Ginger(groups, lr=0.1, rank=4, decay=0.99, damping=1.0, momentum=0.9)


def train_step(model, optimizer, x, y, generator):
    """One step: forward, sampled-label gradient, loss gradient, optimiser step."""
    outputs = model(x)
    params = [p for g in optimizer.param_groups for p in g["params"]]  # the optimiser's order
    curvature = None
    if isinstance(optimizer, Ginger):
        # Eq 8: the gradient at labels drawn from the model, before the loss's backward.
        curvature = sampled_label_gradient(outputs, params, "categorical", generator=generator)
    loss = nn.functional.cross_entropy(outputs, y)
    optimizer.zero_grad()
    loss.backward()
    if curvature is None:
        optimizer.step()
    else:
        optimizer.step(curvature=curvature)
    return loss.item()


def train(make_optimizer, seed=0):
    """Train for EPOCHS epochs; return the history, the model and the optimiser."""
    model = make_model(seed)
    optimizer = make_optimizer(model)
    steps_per_epoch = x_train.shape[0] // BATCH
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    history = {"loss": [], "val_acc": []}
    for _ in range(EPOCHS):
        order = torch.randperm(x_train.shape[0], generator=generator)
        for i in range(steps_per_epoch):
            idx = order[i * BATCH : (i + 1) * BATCH]
            history["loss"].append(train_step(model, optimizer, x_train[idx], y_train[idx], generator))
            scheduler.step()
        with torch.no_grad():
            history["val_acc"].append(float((model(x_val).argmax(1) == y_val).float().mean()))
    return history, model, optimizer


runs = {
    "Ginger": train(make_ginger),
    "momentum SGD": train(lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)),
}
for name, (hist, _, _) in runs.items():
    print(f"{name:13s} final validation accuracy {100 * hist['val_acc'][-1]:.2f}%")

# %%
# Loss and accuracy, and the curvature each block holds
# -----------------------------------------------------
# :meth:`~lowrank_ggn.optim.torch.Ginger.block_states` returns every block's
# state as a :class:`lowrank_ggn.GingerState`. Its eigenvalues σ are those
# of the block's low-rank EMA of the Fisher; the damping γ = 1 adds to them,
# so the preconditioner ``(γI + U diag(σ) Uᵀ)⁻¹`` divides the step along
# each eigenvector by γ + σ and along every other direction by γ.
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
for (name, (hist, _, _)), style in zip(runs.items(), ("C0-", "k:"), strict=True):
    axes[0].semilogy(np.convolve(hist["loss"], np.ones(10) / 10, mode="valid"), style, label=name)
    axes[1].plot(np.arange(1, EPOCHS + 1), 100 * np.asarray(hist["val_acc"]), style, label=name)
_, model, optimizer = runs["Ginger"]
names = {p: n for n, p in model.named_parameters()}
for i, (_block, state) in enumerate(optimizer.block_states()):
    axes[2].semilogy([i] * len(state.eigvals), state.eigvals.numpy(), "C0o")
axes[2].set_xticks(range(len(names)), [names[b[0]] for b, _ in optimizer.block_states()], rotation=45)
axes[2].axhline(1.0, color="k", lw=0.8, ls="--", label="damping γ")
axes[0].set(xlabel="step", ylabel="training loss (moving average)")
axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)")
axes[2].set(ylabel="eigenvalues σ of each block")
for ax in axes:
    ax.grid(alpha=0.3)
axes[1].legend()
axes[2].legend()
fig.tight_layout()
plt.show()

# %%
# Checkpointing and resuming
# --------------------------
# ``state_dict()`` holds every block's curvature state (in its own dtype) and
# momentum buffer; ``load_state_dict`` restores them exactly, so a run resumed
# from a checkpoint continues as the uninterrupted run does.
import io

buffer = io.BytesIO()
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)

resumed_model = make_model(seed=1)  # different weights, overwritten below
resumed_optimizer = make_ginger(resumed_model)
buffer.seek(0)
checkpoint = torch.load(buffer)
resumed_model.load_state_dict(checkpoint["model"])
resumed_optimizer.load_state_dict(checkpoint["optimizer"])

for m, opt in ((model, optimizer), (resumed_model, resumed_optimizer)):
    generator = torch.Generator().manual_seed(123)
    for i in range(3):
        train_step(m, opt, x_train[i * BATCH : (i + 1) * BATCH], y_train[i * BATCH : (i + 1) * BATCH], generator)
same = all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True))
print("resumed run identical to the uninterrupted one:", same)
assert same
