"""
The spectrum of a real Fisher stream, and what rank τ keeps of it
=================================================================

Train softmax regression on scikit-learn's digits with Adam, feed the
sampled-label gradients (Eq 8) to Ginger and QNG, and compare their
eigenvalues with those of the exact EMA of the Fisher (Eq 7). Ginger's
eigenvalues follow the best rank-τ approximation (Eckart–Young) closely, and
its tracked ``discarded`` mass closes the trace: ``tr M = Σσ + discarded``.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import lowrank_ggn as lg
from lowrank_ggn.studies import SoftmaxRegression, fisher_stream

model = SoftmaxRegression()
rank, decay = 8, 0.99
ginger = lg.ginger_init(model.dim, rank)
qng = lg.qng_init(model.dim, rank)
exact = np.zeros((model.dim, model.dim))
trace_gap = []
for item in fisher_stream(model, steps=200, seed=0):
    d = item.curvature
    ginger = lg.ginger_update(ginger, d, decay=decay)
    qng = lg.qng_update(qng, d, decay=decay)
    exact = lg.ema_update_dense(exact, d, decay=decay)
    trace_gap.append(abs(float(ginger.eigvals.sum() + ginger.discarded) - np.trace(exact)) / np.trace(exact))

# %%
# Eigenvalues: the exact EMA, its best rank-τ approximation, Ginger, and the
# low-rank part of QNG's ``ÂÂᵀ − α^τ I`` (Observation 1: PSD, rank ≤ τ).
lam = np.linalg.eigvalsh(exact)[::-1]
qng_low = np.linalg.eigvalsh(lg.qng_dense(qng) - decay**rank * np.eye(model.dim))[::-1][:rank]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
axes[0].semilogy(np.arange(1, 41), lam[:40], "k.-", label="exact EMA")
axes[0].semilogy(np.arange(1, rank + 1), ginger.eigvals, "C0o", label=f"Ginger (τ = {rank})")
axes[0].semilogy(np.arange(1, rank + 1), np.maximum(qng_low, 1e-12), "C3s", label="QNG, ÂÂᵀ − α^τ I")
axes[0].set_xlabel("i")
axes[0].set_ylabel("eigenvalue")
axes[0].legend()
axes[1].semilogy(trace_gap)
axes[1].set_xlabel("step")
axes[1].set_ylabel("|Σσ + discarded − tr M| / tr M")
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
eig_error = np.abs(ginger.eigvals - lam[:rank]).max() / lam[0]
print(f"Ginger's eigenvalues vs the best rank-{rank}: max relative error {eig_error:.2e}")
print(f"captured trace: Ginger {ginger.eigvals.sum() / lam.sum():.3f}, oracle {lam[:rank].sum() / lam.sum():.3f}")
plt.show()
