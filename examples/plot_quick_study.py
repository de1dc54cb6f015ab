"""
Ginger against QNG at equal memory and equal damping
=====================================================

QNG's curvature is ``α^k I + rank k`` with an implicit damping ``α^k``
(Observation 1). Giving Ginger the same damping ``γ = α^τ`` isolates what the
paper claims: at the same rank τ, Ginger keeps a better low-rank part. This
runs a small study on the sampled-label Fisher stream of softmax regression
trained with Adam on scikit-learn's digits, and plots the error of each
preconditioner against the exact EMA as the rank grows.
"""

# %%
# Run a small study: one stream, one seed, three ranks, float64 only.
from lowrank_ggn.studies import StudyConfig, run_study, summary_table

config = StudyConfig.quick(
    streams=("digits-softmax",),
    steps=120,
    ranks=(2, 4, 8),
    decays=(0.99,),
    dampings=(1e-2,),
    rank=4,
    decay=0.99,
    damping=1e-2,
    dtypes=("float64",),
    checkpoints=4,
)
result = run_study(config, progress=False)
print(summary_table(result))

# %%
# Plot the final inverse error and the cosine between the approximate and the
# exact natural-gradient directions, at equal damping, against the rank.
import matplotlib.pyplot as plt

final = [r for r in result.rows if r["step"] == config.steps and r["damping_mode"] == "equal"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
for method, style in (("oracle", "k-"), ("ginger", "C0-o"), ("qng", "C3-s"), ("diag", "C1--")):
    rows = sorted((r for r in final if r["method"] == method), key=lambda r: r["rank"])
    ranks = [r["rank"] for r in rows]
    axes[0].plot(ranks, [r["inv_spectral_error"] for r in rows], style, label=method)
    axes[1].plot(ranks, [r["cosine"] for r in rows], style, label=method)
axes[0].set_ylabel("‖G̃⁻¹ − G⁻¹‖ / ‖G⁻¹‖")
axes[1].set_ylabel("cos(G̃⁻¹g, G⁻¹g)")
for ax in axes:
    ax.set_xlabel("rank τ (γ = α^τ)")
    ax.set_xscale("log", base=2)
    ax.grid(alpha=0.3)
axes[0].legend()
fig.tight_layout()
plt.show()
