r"""The sampled-label gradient of Eq 8 in PyTorch, for the exponential-family likelihoods of §2.1.

The same quantities as :mod:`lowrank_ggn.optim.jax_likelihoods`: with labels
sampled from the model, ``ŷ_n ~ r(· | f_n)``,

.. math:: d = \frac{1}{\sqrt{N}} \sum_n \nabla_\theta \log r(\hat y_n \mid f(\theta; x_n)) = J^\top c,
   \qquad \mathbb{E}[d d^\top] = \frac1N \sum_n J_n^\top H_n J_n ,

the Fisher = GGN (Eq 4–6) of the mean negative log-likelihood, computed as one
extra backward pass from the outputs:

===========  ==============================  ==============================  =====================
likelihood   natural parameter ``f``         ``∇_f log r(ŷ | f)``            ``H = −∇²_f log r``
===========  ==============================  ==============================  =====================
categorical  logits (classes on last axis)   ``onehot(ŷ) − softmax(f)``      ``diag(p) − p pᵀ``
bernoulli    logits (elementwise)            ``ŷ − sigmoid(f)``              ``p (1 − p)``
gaussian     mean (variance ``s²`` fixed)    ``(ŷ − f)/s² = ε/s``            ``I/s²``
===========  ==============================  ==============================  =====================

with ``p = softmax(f)`` (categorical) or ``sigmoid(f)`` (Bernoulli) and
``ε ~ N(0, I)``.

``N`` (``normalizer``) defaults to the batch size ``outputs.shape[0]``; every
other axis belongs to one example. Use it with the optimisers of
:mod:`lowrank_ggn.optim.torch`::

    outputs = model(x)
    d = sampled_label_gradient(outputs, list(model.parameters()), "categorical")
    loss = torch.nn.functional.cross_entropy(outputs, y)
    optimizer.zero_grad(); loss.backward()
    optimizer.step(curvature=d)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["LIKELIHOODS", "sample_labels", "sampled_label_cotangent", "sampled_label_gradient"]

Likelihood = Literal["categorical", "bernoulli", "gaussian"]
LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
"""The likelihoods the functions of this module accept (the ``likelihood`` argument)."""


def _check(outputs: torch.Tensor, likelihood: str, variance: float, normalizer: float | None) -> None:
    if likelihood not in LIKELIHOODS:
        msg = f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}"
        raise ValueError(msg)
    if not isinstance(outputs, torch.Tensor):
        msg = f"outputs must be a tensor, got {type(outputs).__name__}"
        raise TypeError(msg)
    if not outputs.is_floating_point():
        msg = f"outputs must be floating point, got dtype {outputs.dtype}"
        raise TypeError(msg)
    if outputs.ndim < 1 or (likelihood == "categorical" and outputs.ndim < 2):
        need = "(batch, ..., classes)" if likelihood == "categorical" else "(batch, ...)"
        msg = f"outputs must have shape {need}, got {tuple(outputs.shape)}"
        raise ValueError(msg)
    if not float(variance) > 0:
        msg = f"variance must be positive, got {variance!r}"
        raise ValueError(msg)
    if normalizer is not None and not (isinstance(normalizer, int | float) and normalizer > 0):
        msg = f"normalizer must be a positive number, got {normalizer!r}"
        raise ValueError(msg)


def sample_labels(
    outputs: torch.Tensor,
    likelihood: Likelihood,
    *,
    variance: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw labels ``ŷ ~ r(· | f)`` from the model's outputs (no gradient flows).

    Parameters
    ----------
    outputs : torch.Tensor
        Natural parameters: logits (categorical: classes on the last axis;
        Bernoulli: elementwise) or the Gaussian mean.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).
    generator : torch.Generator, optional
        Source of randomness, for reproducible draws.

    Returns
    -------
    torch.Tensor
        Class indices (int64) of shape ``outputs.shape[:-1]``, 0/1 values, or
        real values, as for :func:`lowrank_ggn.optim.jax_likelihoods.sample_labels`.
    """
    _check(outputs, likelihood, variance, None)
    f = outputs.detach()
    if likelihood == "categorical":
        probs = torch.softmax(f.reshape(-1, f.shape[-1]), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).reshape(f.shape[:-1])
    if likelihood == "bernoulli":
        return torch.bernoulli(torch.sigmoid(f), generator=generator)
    noise = torch.randn(f.shape, dtype=f.dtype, device=f.device, generator=generator)
    return f + float(variance) ** 0.5 * noise


def sampled_label_cotangent(
    outputs: torch.Tensor,
    likelihood: Likelihood,
    *,
    variance: float = 1.0,
    normalizer: float | None = None,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Compute the output-space cotangent ``c = ∇_f (1/√N) Σ_n log r(ŷ_n | f_n)`` at sampled labels.

    Parameters
    ----------
    outputs : torch.Tensor
        Natural parameters, leading axis the batch.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).
    normalizer : float, optional
        N, the count the loss divides by; default ``outputs.shape[0]``.
    generator : torch.Generator, optional
        Source of randomness.
    labels : torch.Tensor, optional
        Use these labels instead of sampling (for tests and exact expectations).

    Returns
    -------
    torch.Tensor
        ``c``, detached, of the shape and dtype of ``outputs``;
        ``torch.autograd.grad(outputs, params, grad_outputs=c)`` gives the
        curvature vector ``d = Jᵀ c``.
    """
    _check(outputs, likelihood, variance, normalizer)
    if labels is None:
        labels = sample_labels(outputs, likelihood, variance=variance, generator=generator)
    f = outputs.detach()
    if likelihood == "categorical":
        onehot = torch.nn.functional.one_hot(labels.long(), f.shape[-1]).to(f.dtype)
        c = onehot - torch.softmax(f, dim=-1)
    elif likelihood == "bernoulli":
        c = labels.to(f.dtype) - torch.sigmoid(f)
    else:
        c = (labels.to(f.dtype) - f) / float(variance)
    n = f.shape[0] if normalizer is None else normalizer
    return c / float(n) ** 0.5


def sampled_label_gradient(
    outputs: torch.Tensor,
    params: Sequence[torch.Tensor],
    likelihood: Likelihood,
    *,
    variance: float = 1.0,
    normalizer: float | None = None,
    generator: torch.Generator | None = None,
    retain_graph: bool = True,
) -> list[torch.Tensor]:
    r"""Compute the curvature vector ``d`` of Eq 8, one tensor per parameter.

    .. math:: d = \frac{1}{\sqrt{N}} \sum_n \nabla_\theta \log r(\hat y_n \mid f(\theta; x_n)),
       \qquad \hat y_n \sim r(\cdot \mid f(\theta; x_n)),

    computed by ``torch.autograd.grad(outputs, params, grad_outputs=c)`` with
    the cotangent of :func:`sampled_label_cotangent`, so that
    ``E[d dᵀ]`` is the GGN/Fisher of the mean negative log-likelihood.

    Parameters
    ----------
    outputs : torch.Tensor
        Model outputs with their autograd graph.
    params : sequence of torch.Tensor
        Parameters to differentiate (in the optimiser's order, to pass the
        result as ``step(curvature=...)``).
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).
    normalizer : float, optional
        N, the count the loss divides by; default the batch size.
    generator : torch.Generator, optional
        Source of randomness.
    retain_graph : bool
        Keep the graph for the loss's own ``backward`` (default True).

    Returns
    -------
    list of torch.Tensor
        ``d`` split by parameter; zeros for parameters the outputs do not
        depend on. Pass it as ``optimizer.step(curvature=d)``.

    Examples
    --------
    >>> import torch
    >>> from lowrank_ggn.optim.torch_likelihoods import sampled_label_gradient
    >>> model = torch.nn.Linear(3, 4)
    >>> outputs = model(torch.ones(8, 3))
    >>> d = sampled_label_gradient(outputs, list(model.parameters()), "categorical")
    >>> [tuple(t.shape) for t in d]
    [(4, 3), (4,)]
    """
    params = list(params)
    cot = sampled_label_cotangent(outputs, likelihood, variance=variance, normalizer=normalizer, generator=generator)
    grads = torch.autograd.grad(outputs, params, grad_outputs=cot, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
