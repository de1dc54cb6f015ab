r"""The sampled-label gradient of Eq 8 in JAX, for the exponential-family likelihoods of §2.1.

A model maps inputs to natural parameters ``f = f(θ; x)`` of a likelihood
``r(y | f)`` (Eq 1). With labels sampled from the model, ``ŷ ~ r(· | f)``, the
curvature vector of Eq 8 is

.. math:: d = \frac{1}{\sqrt{N}} \sum_{n} \nabla_\theta \log r(\hat y_n \mid f(\theta; x_n))
        = J^\top c, \qquad c_n = \frac{1}{\sqrt N}\,\nabla_f \log r(\hat y_n \mid f_n),

one vector-Jacobian product with the output-space cotangent ``c``. Because
``E[c_n] = 0`` and ``E[c_n c_nᵀ] = H_n/N`` with ``H_n = ∇²_f(−log r(y_n|f_n))``
(Eq 5), its expected outer product is the Fisher = GGN (Eq 4–6) of the loss
``L = (1/N) Σ_n −log r(y_n | f_n)``:

.. math:: \mathbb{E}[d d^\top] = \frac1N \sum_n J_n^\top H_n J_n .

===========  ==============================  ==============================  =====================
likelihood   natural parameter ``f``         ``∇_f log r(ŷ | f)``            ``H = −∇²_f log r``
===========  ==============================  ==============================  =====================
categorical  logits (classes on last axis)   ``onehot(ŷ) − softmax(f)``      ``diag(p) − p pᵀ``
bernoulli    logits (elementwise)            ``ŷ − sigmoid(f)``              ``p (1 − p)``
gaussian     mean (variance ``s²`` fixed)    ``(ŷ − f)/s² = ε/s``            ``I/s²``
===========  ==============================  ==============================  =====================

with ``p = softmax(f)`` (categorical) or ``sigmoid(f)`` (Bernoulli) and
``ε ~ N(0, I)``.

``N`` (``normalizer``) is the count the loss divides by; by default the size of
the leading (batch) axis, every other axis belonging to one example (their
log-likelihoods are summed). For a loss that averages over all tokens of a
sequence batch pass ``normalizer=batch * length``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

__all__ = [
    "LIKELIHOODS",
    "negative_log_likelihood",
    "sample_labels",
    "sampled_label_cotangent",
    "sampled_label_gradient",
    "value_grad_and_curvature",
]

Likelihood = Literal["categorical", "bernoulli", "gaussian"]
LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
"""The likelihoods the functions of this module accept (the ``likelihood`` argument)."""


def _check(outputs: Any, likelihood: str, variance: Any, normalizer: Any) -> None:
    if likelihood not in LIKELIHOODS:
        msg = f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}"
        raise ValueError(msg)
    if not jnp.issubdtype(jnp.result_type(outputs), jnp.floating):
        msg = f"outputs must be floating point, got dtype {jnp.result_type(outputs)}"
        raise TypeError(msg)
    if jnp.ndim(outputs) < 1 or (likelihood == "categorical" and jnp.ndim(outputs) < 2):
        need = "(batch, ..., classes)" if likelihood == "categorical" else "(batch, ...)"
        msg = f"outputs must have shape {need}, got {jnp.shape(outputs)}"
        raise ValueError(msg)
    if not isinstance(variance, jax.core.Tracer) and not float(variance) > 0:
        msg = f"variance must be positive, got {variance!r}"
        raise ValueError(msg)
    if normalizer is not None and not (isinstance(normalizer, int | float) and normalizer > 0):
        msg = f"normalizer must be a positive number, got {normalizer!r}"
        raise ValueError(msg)


def _normalizer(outputs: Any, normalizer: Any) -> Any:
    return jnp.shape(outputs)[0] if normalizer is None else normalizer


def sample_labels(key: jax.Array, outputs: jax.Array, likelihood: Likelihood, *, variance: float = 1.0) -> jax.Array:
    """Draw labels ``ŷ ~ r(· | f)`` from the model's outputs.

    Parameters
    ----------
    key : jax.Array
        PRNG key.
    outputs : array
        Natural parameters ``f``: logits (categorical: classes on the last
        axis; Bernoulli: elementwise) or the Gaussian mean.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).

    Returns
    -------
    array
        Integer class indices of shape ``outputs.shape[:-1]`` (categorical),
        0/1 floats of the shape of ``outputs`` (Bernoulli) or real values
        (Gaussian).
    """
    _check(outputs, likelihood, variance, None)
    f = jax.lax.stop_gradient(outputs)
    if likelihood == "categorical":
        return jax.random.categorical(key, f, axis=-1)
    if likelihood == "bernoulli":
        return jax.random.bernoulli(key, jax.nn.sigmoid(f)).astype(f.dtype)
    return f + jnp.sqrt(jnp.asarray(variance, f.dtype)) * jax.random.normal(key, f.shape, f.dtype)


def _loglik_grad(outputs: jax.Array, labels: jax.Array, likelihood: str, variance: Any) -> jax.Array:
    """``∇_f log r(y | f)`` in closed form, elementwise over the batch."""
    f = jax.lax.stop_gradient(outputs)
    if likelihood == "categorical":
        return jax.nn.one_hot(labels, f.shape[-1], dtype=f.dtype) - jax.nn.softmax(f, axis=-1)
    if likelihood == "bernoulli":
        return labels.astype(f.dtype) - jax.nn.sigmoid(f)
    return (labels.astype(f.dtype) - f) / jnp.asarray(variance, f.dtype)


def sampled_label_cotangent(
    key: jax.Array,
    outputs: jax.Array,
    likelihood: Likelihood,
    *,
    variance: float = 1.0,
    normalizer: float | None = None,
    labels: jax.Array | None = None,
) -> jax.Array:
    r"""Compute the output-space cotangent ``c = ∇_f (1/√N) Σ_n log r(ŷ_n | f_n)`` at sampled labels.

    Parameters
    ----------
    key : jax.Array
        PRNG key (ignored when ``labels`` is given).
    outputs : array
        Natural parameters, leading axis the batch.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).
    normalizer : float, optional
        N, the count the loss divides by; default ``outputs.shape[0]``.
    labels : array, optional
        Use these labels instead of sampling (for tests and exact expectations).

    Returns
    -------
    array
        ``c``, of the shape and dtype of ``outputs``, with no gradient
        flowing into ``outputs``. ``jax.vjp`` of the model with ``c`` gives
        the curvature vector ``d = Jᵀ c``.
    """
    _check(outputs, likelihood, variance, normalizer)
    if labels is None:
        labels = sample_labels(key, outputs, likelihood, variance=variance)
    n = _normalizer(outputs, normalizer)
    f = jax.lax.stop_gradient(outputs)
    return _loglik_grad(f, labels, likelihood, variance) / jnp.sqrt(jnp.asarray(n, f.dtype))


def sampled_label_gradient(
    fn: Callable[[Any], jax.Array],
    params: Any,
    key: jax.Array,
    likelihood: Likelihood,
    *,
    variance: float = 1.0,
    normalizer: float | None = None,
) -> Any:
    r"""Compute the curvature vector ``d`` of Eq 8: the log-likelihood gradient at sampled labels.

    .. math:: d = \frac{1}{\sqrt{N}} \sum_n \nabla_\theta \log r(\hat y_n \mid f(\theta; x_n)),
       \qquad \hat y_n \sim r(\cdot \mid f(\theta; x_n)),

    computed as one vector-Jacobian product, so that
    ``E[d dᵀ] = (1/N) Σ_n J_nᵀ H_n J_n`` is the GGN/Fisher of the mean
    negative log-likelihood.

    Parameters
    ----------
    fn : callable
        ``params -> outputs``, the model on a fixed batch (close over the inputs).
    params : pytree
        The parameters at which ``d`` is computed.
    key : jax.Array
        PRNG key for the labels; use a fresh one every step.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).
    normalizer : float, optional
        N, the count the loss divides by; default the batch size
        ``outputs.shape[0]``.

    Returns
    -------
    pytree
        ``d``, with the structure of ``params``: pass it as
        ``update(grads, state, params, curvature=d)``.

    See Also
    --------
    value_grad_and_curvature : The loss, its gradient and ``d`` from one forward pass.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from lowrank_ggn.optim.jax_likelihoods import sampled_label_gradient
    >>> w = jnp.ones((3, 4))
    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> d = sampled_label_gradient(lambda w: x @ w, w, jax.random.key(0), "categorical")
    >>> d.shape
    (3, 4)
    """
    outputs, vjp = jax.vjp(fn, params)
    cot = sampled_label_cotangent(key, outputs, likelihood, variance=variance, normalizer=normalizer)
    return vjp(cot.astype(outputs.dtype))[0]


def negative_log_likelihood(
    outputs: jax.Array, targets: jax.Array, likelihood: Likelihood, *, variance: float = 1.0
) -> jax.Array:
    r"""Per-example ``−log r(y | f)`` (constants dropped), summed over every non-batch axis.

    Categorical: cross-entropy with integer ``targets`` of shape
    ``outputs.shape[:-1]``; Bernoulli: binary cross-entropy with logits and
    0/1 ``targets``; Gaussian: ``‖y − f‖² / (2 s²)``.

    Parameters
    ----------
    outputs : array
        Natural parameters ``f``, leading axis the batch.
    targets : array
        Observed labels: class indices (categorical), 0/1 values
        (Bernoulli) or real values of the shape of ``outputs`` (Gaussian).
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).

    Returns
    -------
    array
        Shape ``(batch,)``: the negative log-likelihood of each example.
        Its mean is the loss whose Fisher the sampled-label gradient
        estimates.
    """
    _check(outputs, likelihood, variance, None)
    if likelihood == "categorical":
        logp = jax.nn.log_softmax(outputs, axis=-1)
        nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    elif likelihood == "bernoulli":
        y = targets.astype(outputs.dtype)
        nll = jax.nn.softplus(outputs) - y * outputs
    else:
        nll = (targets.astype(outputs.dtype) - outputs) ** 2 / (2 * jnp.asarray(variance, outputs.dtype))
    return jnp.sum(jnp.reshape(nll, (nll.shape[0], -1)), axis=1)


def value_grad_and_curvature(
    fn: Callable[[Any], jax.Array],
    params: Any,
    targets: jax.Array,
    key: jax.Array,
    likelihood: Likelihood,
    *,
    variance: float = 1.0,
    normalizer: float | None = None,
) -> tuple[jax.Array, Any, Any, jax.Array]:
    r"""Loss, its gradient and the curvature vector of Eq 8 from one forward pass.

    The loss is the mean negative log-likelihood
    ``L = (1/N) Σ_n −log r(y_n | f_n)``; its gradient and the sampled-label
    gradient ``d`` share the forward pass and differ only in the output
    cotangent of the vector-Jacobian product.

    Parameters
    ----------
    fn : callable
        ``params -> outputs`` on a fixed batch.
    params : pytree
        The parameters at which everything is evaluated.
    targets : array
        Observed labels (see :func:`negative_log_likelihood`).
    key : jax.Array
        PRNG key for the sampled labels; use a fresh one every step.
    likelihood : {"categorical", "bernoulli", "gaussian"}
        The model's likelihood ``r(y | f)`` (see the module's table).
    variance : float
        Gaussian variance ``s²`` (ignored by the other likelihoods).
    normalizer : float, optional
        N, the count the loss divides by; default the batch size.

    Returns
    -------
    loss : jax.Array
        0-d: the mean negative log-likelihood ``L``.
    grads : pytree
        ``∇_θ L``.
    curvature : pytree
        ``d``, to pass as ``update(grads, state, params, curvature=d)``.
    outputs : array
        The model outputs (for accuracy and the like).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from lowrank_ggn.optim.jax_likelihoods import value_grad_and_curvature
    >>> x, y = jnp.ones((8, 3)), jnp.arange(8) % 4
    >>> w = jnp.zeros((3, 4))
    >>> loss, g, d, logits = value_grad_and_curvature(lambda w: x @ w, w, y, jax.random.key(0), "categorical")
    >>> round(float(loss), 4)  # log 4
    1.3863
    """
    outputs, vjp = jax.vjp(fn, params)
    n = _normalizer(outputs, normalizer)
    loss_fn = lambda f: jnp.sum(negative_log_likelihood(f, targets, likelihood, variance=variance)) / n  # noqa: E731
    loss, loss_cot = jax.value_and_grad(loss_fn)(outputs)
    cot = sampled_label_cotangent(key, outputs, likelihood, variance=variance, normalizer=normalizer)
    grads = vjp(loss_cot)[0]
    curvature = vjp(cot.astype(outputs.dtype))[0]
    return loss, grads, curvature, outputs
