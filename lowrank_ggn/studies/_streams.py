r"""Curvature streams: sampled-label Fisher vectors along a real training trajectory, and synthetic ones.

A *stream* yields, step after step, the curvature vector ``d_t`` that the
methods fold into their EMA (Eq 7) and the loss gradient ``g_t`` that a
second-order optimiser would precondition.

**Models on scikit-learn's digits** (1797 images of 8 × 8 pixels, shipped with
scikit-learn, standardised). The model is trained by Adam on mini-batches
while the stream is consumed; at each step, with ``ŷ`` drawn from the model's
own predictive distribution ``p_θ(·|x)`` for every ``x`` of the batch ``B_t``,

.. math::
   d_t = \frac{1}{\sqrt{|B_t|}} \sum_{x \in B_t} \nabla_\theta \log p_\theta(\hat y \mid x)
   \qquad \text{(Eq 8)},

so that ``E[d_t d_tᵀ]`` is the Fisher (= GGN, Eq 5–6) of the batch
distribution, and ``g_t`` is the gradient of the mean cross-entropy of the
batch with its true labels. Gradients are computed in closed form (NumPy,
float64).

**Synthetic streams** with a controlled spectrum ``s``: ``d_t = Q diag(√s) z_t``
with ``z_t ~ N(0, I)`` and a fixed random rotation ``Q``, so that
``E[d dᵀ] = Q diag(s) Qᵀ``; the "gradients" are drawn from the same
distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "MLP",
    "STREAMS",
    "SoftmaxRegression",
    "StreamStep",
    "digits_data",
    "fisher_stream",
    "make_stream",
    "stream_dim",
    "synthetic_spectrum",
    "synthetic_stream",
]


class StreamStep(NamedTuple):
    """One step of a curvature stream (NumPy float64).

    Parameters
    ----------
    step : int
        The step index t.
    curvature, gradient : numpy.ndarray
        d_t and g_t, shape (dim,).
    loss : float
        The mini-batch loss (NaN for synthetic streams).
    """

    step: int
    """The step index t, from 1."""
    curvature: np.ndarray
    """The curvature vector d_t, shape (dim,): the sampled-label gradient of Eq 8 (a Fisher vector)."""
    gradient: np.ndarray
    """The loss gradient g_t, shape (dim,), of the mini-batch at the same parameters θ_t."""
    loss: float
    """The mini-batch cross-entropy at θ_t (NaN for synthetic streams)."""


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits, standardised.

    The data ship inside scikit-learn (``sklearn.datasets.load_digits``);
    nothing is downloaded. Each pixel is centred and scaled to unit variance
    (constant pixels are only centred).

    Returns
    -------
    x : numpy.ndarray
        The images, shape (1797, 64), float64, one flattened 8 × 8 image per row.
    y : numpy.ndarray
        The labels 0–9, shape (1797,), int64.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = np.asarray(data.data, dtype=np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return x, np.asarray(data.target, dtype=np.int64)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.shape[0]), y], 1e-300))))


@dataclass(frozen=True)
class SoftmaxRegression:
    r"""Multinomial logistic regression :math:`p(y \mid x) = \operatorname{softmax}(W x + b)`, θ = (W, b).

    With 64 inputs and 10 classes, ``dim = 650``. The flat parameter vector
    holds ``W`` (classes × inputs, row-major), then ``b``.

    Parameters
    ----------
    num_inputs : int, default 64
        Input features (the 64 pixels of a digit).
    num_classes : int, default 10
        Classes.
    """

    num_inputs: int = 64
    num_classes: int = 10

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return (self.num_inputs + 1) * self.num_classes

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Draw small random initial parameters, θ ~ N(0, 10⁻⁴ I).

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness.

        Returns
        -------
        numpy.ndarray
            θ, shape (dim,), float64.
        """
        return 0.01 * rng.standard_normal(self.dim)

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, n = self.num_classes, self.num_inputs
        return theta[: k * n].reshape(k, n), theta[k * n :]

    def probabilities(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        r"""Return the predictive probabilities :math:`p_\theta(y \mid x)` of a batch.

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, num_inputs).

        Returns
        -------
        numpy.ndarray
            Shape (batch, num_classes); each row sums to 1.
        """
        w, b = self._unpack(theta)
        return _softmax(x @ w.T + b)

    def backward(self, theta: np.ndarray, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        r"""Return :math:`\sum_i J_i^\top \delta_i`, the pull-back of output-space vectors through the network.

        :math:`J_i = \partial z(x_i) / \partial \theta` is the Jacobian of the
        logits of example i. With :math:`\delta_i = \partial \ell_i / \partial z`
        this is the gradient of :math:`\sum_i \ell_i` (reverse mode, in closed form).

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, num_inputs).
        delta : numpy.ndarray
            δ, shape (batch, num_classes), one output-space (logit) vector per example.

        Returns
        -------
        numpy.ndarray
            Shape (dim,), in the layout of θ.
        """
        del theta
        return np.concatenate([(delta.T @ x).ravel(), delta.sum(axis=0)])


@dataclass(frozen=True)
class MLP:
    r"""One-hidden-layer perceptron :math:`p(y \mid x) = \operatorname{softmax}(W_2 \tanh(W_1 x + b_1) + b_2)`.

    With 64 inputs, 16 hidden units and 10 classes, ``dim = 1210``. The flat
    parameter vector holds ``W₁`` (hidden × inputs, row-major), ``b₁``, ``W₂``
    (classes × hidden), ``b₂``.

    Parameters
    ----------
    num_inputs : int, default 64
        Input features (the 64 pixels of a digit).
    num_hidden : int, default 16
        Hidden tanh units.
    num_classes : int, default 10
        Classes.
    """

    num_inputs: int = 64
    num_hidden: int = 16
    num_classes: int = 10

    @property
    def dim(self) -> int:
        """Number of parameters."""
        n, h, k = self.num_inputs, self.num_hidden, self.num_classes
        return h * n + h + k * h + k

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Draw Glorot-normal weights and zero biases.

        Each weight matrix with fan-in n and fan-out m is drawn from
        N(0, 2/(n + m)).

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness.

        Returns
        -------
        numpy.ndarray
            θ, shape (dim,), float64.
        """
        n, h, k = self.num_inputs, self.num_hidden, self.num_classes
        w1 = rng.standard_normal((h, n)) * math.sqrt(2.0 / (n + h))
        w2 = rng.standard_normal((k, h)) * math.sqrt(2.0 / (h + k))
        return np.concatenate([w1.ravel(), np.zeros(h), w2.ravel(), np.zeros(k)])

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n, h, k = self.num_inputs, self.num_hidden, self.num_classes
        i = 0
        w1 = theta[i : i + h * n].reshape(h, n)
        i += h * n
        b1 = theta[i : i + h]
        i += h
        w2 = theta[i : i + k * h].reshape(k, h)
        i += k * h
        return w1, b1, w2, theta[i : i + k]

    def probabilities(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        r"""Return the predictive probabilities :math:`p_\theta(y \mid x)` of a batch.

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, num_inputs).

        Returns
        -------
        numpy.ndarray
            Shape (batch, num_classes); each row sums to 1.
        """
        w1, b1, w2, b2 = self._unpack(theta)
        return _softmax(np.tanh(x @ w1.T + b1) @ w2.T + b2)

    def backward(self, theta: np.ndarray, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        r"""Return :math:`\sum_i J_i^\top \delta_i`, the pull-back of output-space vectors through the network.

        :math:`J_i = \partial z(x_i) / \partial \theta` is the Jacobian of the
        logits of example i. With :math:`\delta_i = \partial \ell_i / \partial z`
        this is the gradient of :math:`\sum_i \ell_i` (reverse mode, in closed form).

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, num_inputs).
        delta : numpy.ndarray
            δ, shape (batch, num_classes), one output-space (logit) vector per example.

        Returns
        -------
        numpy.ndarray
            Shape (dim,), in the layout of θ.
        """
        w1, b1, w2, _ = self._unpack(theta)
        a = np.tanh(x @ w1.T + b1)
        da = (delta @ w2) * (1.0 - a * a)
        return np.concatenate([(da.T @ x).ravel(), da.sum(axis=0), (delta.T @ a).ravel(), delta.sum(axis=0)])


def fisher_stream(
    model: SoftmaxRegression | MLP,
    *,
    steps: int,
    seed: int,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
) -> Iterator[StreamStep]:
    r"""Train ``model`` on digits with Adam and yield the sampled-label Fisher stream.

    At each step a mini-batch is drawn (without replacement, reshuffled every
    epoch); the stream yields ``d_t`` (Eq 8, labels sampled from the model)
    and the loss gradient ``g_t`` at the current parameters θ_t; then Adam
    (β₁ = 0.9, β₂ = 0.999, ε = 1e-8) takes its step with ``g_t``.

    The output-space vector of a sampled label is
    ``∂ log p(ŷ|x)/∂z = e_ŷ − p`` (``z`` the logits), pulled back through the
    network's Jacobian.

    Parameters
    ----------
    model : SoftmaxRegression or MLP
        The model trained and differentiated (its ``dim`` is the stream's).
    steps : int
        Number of steps T.
    seed : int
        Seeds the initial parameters, the batches and the sampled labels.
    batch_size : int, default 32
        :math:`|B_t|`, the mini-batch size.
    learning_rate : float, default 1e-2
        Adam's step size.

    Yields
    ------
    StreamStep
        For t = 1, …, T: :math:`d_t`, :math:`g_t` and the mini-batch loss, all at θ_t.
    """
    x, y = digits_data()
    rng = np.random.default_rng(seed)
    theta = model.init(rng)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    order = rng.permutation(x.shape[0])
    pos = 0
    for t in range(1, steps + 1):
        if pos + batch_size > order.shape[0]:
            order, pos = rng.permutation(x.shape[0]), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        xb, yb = x[idx], y[idx]
        p = model.probabilities(theta, xb)
        onehot = np.eye(model.num_classes)[yb]
        grad = model.backward(theta, xb, (p - onehot) / batch_size)
        u = rng.random((batch_size, 1))
        sampled = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), model.num_classes - 1)
        delta = np.eye(model.num_classes)[sampled] - p
        curvature = model.backward(theta, xb, delta) / math.sqrt(batch_size)
        yield StreamStep(t, curvature, grad, _cross_entropy(p, yb))
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        m_hat = m / (1 - 0.9**t)
        v_hat = v / (1 - 0.999**t)
        theta = theta - learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)


def synthetic_spectrum(
    dim: int, kind: str, *, exponent: float = 1.5, step_at: int = 16, floor: float = 1e-3
) -> np.ndarray:
    r"""Return the eigenvalues of a synthetic stream's covariance, descending.

    Parameters
    ----------
    dim : int
        d, the number of eigenvalues.
    kind : {"power", "step"}
        ``"power"``: :math:`s_i = i^{-p}` (a power law, p = ``exponent``);
        ``"step"``: :math:`s_i = 1` for :math:`i \le` ``step_at``, ``floor`` after
        (a spectral gap).
    exponent : float, default 1.5
        p of the power law.
    step_at : int, default 16
        Number of unit eigenvalues of the step.
    floor : float, default 1e-3
        The eigenvalue after the step.

    Returns
    -------
    numpy.ndarray
        s, shape (dim,), float64, positive and descending.

    Raises
    ------
    ValueError
        If ``kind`` is neither.
    """
    i = np.arange(1, dim + 1, dtype=np.float64)
    if kind == "power":
        return i**-exponent
    if kind == "step":
        return np.where(i <= step_at, 1.0, floor)
    msg = f"kind must be 'power' or 'step', got {kind!r}"
    raise ValueError(msg)


def synthetic_stream(
    kind: str,
    *,
    dim: int,
    steps: int,
    seed: int,
    exponent: float = 1.5,
    step_at: int = 16,
    floor: float = 1e-3,
) -> Iterator[StreamStep]:
    r"""Yield curvature vectors and gradients with a controlled spectrum s.

    :math:`d_t = Q \operatorname{diag}(\sqrt s) z_t` and
    :math:`g_t = Q \operatorname{diag}(\sqrt s) z'_t`, where ``Q`` is a random
    rotation (the Q factor of a Gaussian matrix) drawn from ``seed``, and
    :math:`z_t, z'_t \sim N(0, I)` are independent, so that
    :math:`E[d_t d_t^\top] = Q \operatorname{diag}(s) Q^\top`.

    Parameters
    ----------
    kind : {"power", "step"}
        The spectrum (see :func:`synthetic_spectrum`).
    dim : int
        d.
    steps : int
        Number of steps T.
    seed : int
        Seeds the rotation and the draws.
    exponent : float, default 1.5
        p of the power law (see :func:`synthetic_spectrum`).
    step_at : int, default 16
        Number of unit eigenvalues of the step.
    floor : float, default 1e-3
        The eigenvalue after the step.

    Yields
    ------
    StreamStep
        For t = 1, …, T, with ``loss`` NaN.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    root = np.sqrt(synthetic_spectrum(dim, kind, exponent=exponent, step_at=step_at, floor=floor))
    for t in range(1, steps + 1):
        z = rng.standard_normal((2, dim)) * root
        yield StreamStep(t, q @ z[0], q @ z[1], math.nan)


STREAMS = ("digits-softmax", "digits-mlp", "power", "step")
"""Names accepted by :func:`make_stream`."""

_SYNTHETIC_DIM = 500


def stream_dim(name: str) -> int:
    """Return the number of parameters d of a named stream.

    Parameters
    ----------
    name : str
        One of :data:`STREAMS`.

    Returns
    -------
    int
        650 (``digits-softmax``), 1210 (``digits-mlp``) or 500 (``power``, ``step``).

    Raises
    ------
    ValueError
        If ``name`` is not a stream.
    """
    if name == "digits-softmax":
        return SoftmaxRegression().dim
    if name == "digits-mlp":
        return MLP().dim
    if name in {"power", "step"}:
        return _SYNTHETIC_DIM
    msg = f"stream must be one of {STREAMS}, got {name!r}"
    raise ValueError(msg)


def make_stream(name: str, *, steps: int, seed: int) -> Iterator[StreamStep]:
    """Return a named stream: ``digits-softmax`` (d = 650), ``digits-mlp`` (d = 1210), ``power``, ``step`` (d = 500).

    Parameters
    ----------
    name : str
        One of :data:`STREAMS`.
    steps : int
        Number of steps.
    seed : int
        Random seed (parameters, batches, sampled labels or synthetic draws).

    Returns
    -------
    iterator of StreamStep
        The stream, lazily: a generator of ``steps`` items (:func:`fisher_stream`
        with the default batch size and learning rate, or :func:`synthetic_stream`).

    Raises
    ------
    ValueError
        If ``name`` is not a stream (raised at once, not on iteration).
    """
    stream_dim(name)
    if name == "digits-softmax":
        return fisher_stream(SoftmaxRegression(), steps=steps, seed=seed)
    if name == "digits-mlp":
        return fisher_stream(MLP(), steps=steps, seed=seed)
    return synthetic_stream(name, dim=_SYNTHETIC_DIM, steps=steps, seed=seed)
