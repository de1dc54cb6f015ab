"""
Tail-aware damping: giving back the curvature that truncation drops
===================================================================

A rank-τ approximation ``γI + UΣUᵀ`` treats every direction outside ``U`` as
if its curvature were γ. When the discarded curvature is much larger than γ,
the step ``−G̃⁻¹g`` overshoots in those directions. Ginger tracks the
curvature it drops (``GingerState.discarded``, ρ) for free; two ways to turn
it into damping are compared with plain Ginger and the oracle: the
trace-matched ``γ + ρ/(d − τ)`` and the frequent-directions bound ``γ + ρ``,
which guarantees ``G̃ ⪰ γI + M``.
"""

# %%
from lowrank_ggn.studies import StudyConfig, run_study

dampings = (1e-4, 1e-3, 1e-2, 1e-1)
config = StudyConfig.quick(
    streams=("digits-softmax",),
    steps=150,
    ranks=(8,),
    decays=(0.99,),
    dampings=dampings,
    rank=8,
    decay=0.99,
    damping=1e-2,
    dtypes=("float64",),
    checkpoints=1,
)
result = run_study(config, progress=False)

# %%
# The fraction of the optimal decrease of the exact quadratic model reached by
# each step (1 is the exact natural-gradient step; negative means uphill).
import matplotlib.pyplot as plt

rows = [r for r in result.rows if r["damping_mode"] == "fixed"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for method, style in (("oracle", "k-"), ("ginger", "C0-o"), ("ginger-tail", "C9--o"), ("ginger-fd", "C4:o")):
    sel = sorted((r for r in rows if r["method"] == method), key=lambda r: r["damping"])
    gammas = [r["damping"] for r in sel]
    axes[0].plot(gammas, [r["decrease_fraction"] for r in sel], style, label=method)
    axes[1].plot(gammas, [r["inv_spectral_error"] for r in sel], style, label=method)
    print(method, [f"{r['decrease_fraction']:.3f}" for r in sel])
axes[0].set_ylabel("fraction of optimal decrease")
axes[0].set_yscale("symlog", linthresh=1.0)
axes[1].set_ylabel("‖G̃⁻¹ − G⁻¹‖ / ‖G⁻¹‖")
for ax in axes:
    ax.set_xscale("log")
    ax.set_xlabel("γ")
    ax.grid(alpha=0.3)
axes[0].legend()
fig.tight_layout()
plt.show()
