r"""Optimisers built on the Ginger and QNG primitives, for optax and ``torch.optim``.

The subpackage imports nothing heavy: each front-end lives in its own module and
imports its framework when it is imported.

``lowrank_ggn.optim.optax``
    :func:`~lowrank_ggn.optim.optax.scale_by_ginger`, :func:`~lowrank_ggn.optim.optax.ginger`,
    :func:`~lowrank_ggn.optim.optax.scale_by_qng`, :func:`~lowrank_ggn.optim.optax.qng`
    (``optax.GradientTransformationExtraArgs``; needs ``jax`` and ``optax``).
``lowrank_ggn.optim.torch``
    :class:`~lowrank_ggn.optim.torch.Ginger` and :class:`~lowrank_ggn.optim.torch.QNG`
    (``torch.optim.Optimizer`` subclasses; needs ``torch``).
``lowrank_ggn.optim.jax_likelihoods``, ``lowrank_ggn.optim.torch_likelihoods``
    The sampled-label gradient ``d_t`` of Eq 8 for the exponential-family
    likelihoods of §2.1 (categorical/softmax, Bernoulli, Gaussian).

Every optimiser step is Algorithm 1 of the paper: fold the curvature vector
``d_t`` into the low-rank EMA of the curvature (Eq 7), then precondition the
gradient with the updated state,

.. math::
   M_t \approx \alpha M_{t-1} + (1-\alpha)\, d_t d_t^\top, \qquad
   u_t = (\gamma_t I + M_t)^{-1} g_t \quad\text{(Ginger, Eq 14–16)}, \qquad
   u_t = (\hat A_t \hat A_t^\top)^{-1} g_t \quad\text{(QNG)},

followed by optional heavy-ball momentum, decoupled weight decay and the
learning rate: :math:`\theta_{t+1} = \theta_t - \eta_t\,(m_t + \lambda\theta_t)`,
:math:`m_t = \mu\, m_{t-1} + u_t`.

**Curvature vector.** ``d_t`` should be the gradient of the log-likelihood at
labels *sampled from the model* (Eq 8), so that
``E[d_t d_tᵀ] = F``, the Fisher, which equals the generalised Gauss–Newton
matrix for these likelihoods (Eq 4–6). When no curvature vector is given the
optimisers use the loss gradient ``g_t`` itself; then
``E[g_t g_tᵀ] = ḡḡᵀ + Σ/B`` (mean gradient and per-example covariance over a
batch of B), the "empirical Fisher", which is not the GGN: it vanishes at a
minimum, follows the labels rather than the model, and is smaller by about a
factor B than the Fisher scale of ``d_t`` (so a different damping suits it).

**Blocking and state layout.** Parameters are split into blocks; each block is
flattened (leaves concatenated in order) into one vector of length
``dim`` and owns one :class:`lowrank_ggn.GingerState` (or
:class:`lowrank_ggn.QNGState`) of rank ``min(rank, dim − 1)``. A block with a
single scalar parameter has rank 0: Ginger applies ``γ⁻¹`` and QNG the
identity to it. Blocks are the whole model (one vector), one block per
parameter array (the paper's choice, the default), or user-defined groups. The
per-block states are plain NamedTuples of arrays whose leading axis is the
block dimension (``basis`` is ``(dim, rank)``, QNG's ``factors`` is
``(rank, dim)``), which is the axis to shard along.

**How the defaults were chosen.** By measurement on the small-scale
reproduction of the paper's image-classification experiments
(``python -m experiments.reproduce``: scikit-learn's digits with an MLP and a
residual CNN, and the breast-cancer data with an MLP; the numbers are on the
reproduction page of the documentation and in ``experiments/RESULTS.md``).
Accuracy there saturates near 98%, so the measurements rule out bad values
more than they single out the best one.

- Damping γ = 1: Ginger (τ = 4) was trained on the digits MLP and CNN with
  γ ∈ {1e-3, 1e-2, 1e-1, 1}, the learning rate tuned over
  {1, 5} × 10^{−1…−4} for each γ (one seed). The tuning-split accuracy
  averaged over the two models was 98.05–98.33% for every γ (γ = 0.1 highest,
  γ = 1 lowest; in an earlier run of the previous core γ = 1 was highest,
  98.5% against 97.9–98.1%): the differences are one or two tuning examples.
  γ = 1 was kept because its best learning rate (0.1) lies inside the grid,
  whereas γ = 1e-3 needed the grid's smallest rate. The
  damping only matters relative to the scale of the curvature: with the
  sampled-label gradient of Eq 8 and a mean negative log-likelihood, the top
  eigenvalues per block were 1e-3…2 on the digits MLP, so γ = 1 shrinks only
  the few directions with σ ≳ 1. Rescale γ with the Fisher of other models.
- Rank τ = 4: across τ ∈ {1, 2, 4, 8, 16} no rank beat τ = 4 by more than the
  spread over three seeds (largest gap: τ = 2 on the digits CNN, 97.87 ± 0.70%
  against 97.59 ± 0.42%), while memory grows as O(dτ) and time as O(dτ²).
- Decay α = 0.99: the paper's "second moment" coefficient (§4.1); in the
  α × τ grid (α ∈ {0.9, 0.99, 0.999}, τ ∈ {2, 4, 8}, both digits models)
  α = 0.99 was within about one seed spread of the best α (at most 0.74
  points behind, on the CNN at τ = 4).
- Momentum μ = 0.9: the paper's "first moment" coefficient, applied as
  heavy-ball momentum on the preconditioned direction; not varied.
- Learning rate 0.1 (the default of the torch optimisers; the optax
  constructors take it as their first argument): the rate tuned for Ginger and
  QNG at the default damping on the two MLPs; on the digits CNN the tuning
  chose 0.05 for both (for Ginger, 0.1 lost by one tuning example in three
  seeds).
- Re-orthonormalisation every 100 updates: keeps the float32 drift of
  ``UᵀU − I`` near 4e-8 (it random-walks to 1.5e-5 after 20k updates
  otherwise), at an amortised cost of about 1% of an update.
"""

from __future__ import annotations

__all__: list[str] = []
