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

**Any approximation.** :class:`~lowrank_ggn.optim.optax.scale_by_lowrank` and
:class:`~lowrank_ggn.optim.torch.LowRank` take any object of the approximation
protocol (``lg.ginger(...)``, ``lg.ginger_product(...)``, ``lg.qng(...)``);
``scale_by_ginger``/``ginger``/``Ginger`` and ``scale_by_qng``/``qng``/``QNG``
are these with the approximation built from ``rank`` and ``decay``. Each step
with a curvature update is one fused update + query.

The defaults (τ = 4, α = 0.99, γ = 1, μ = 0.9, learning rate 0.1,
``reorthonormalize_every="auto"``) and how they were measured are on the
optimisers page of the documentation.
"""

from __future__ import annotations

__all__: list[str] = []
