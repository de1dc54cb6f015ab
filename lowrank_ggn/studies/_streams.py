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

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "LARGE_STREAMS",
    "MLP",
    "STREAMS",
    "DeepMLP",
    "LargeStream",
    "SmallCNN",
    "SoftmaxRegression",
    "StreamStep",
    "digits_data",
    "fisher_stream",
    "large_stream_blocks",
    "make_large_stream",
    "make_stream",
    "parameter_blocks",
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


def _glorot(rng: np.random.Generator, fan_in: int, fan_out: int, shape: tuple[int, ...]) -> np.ndarray:
    """Glorot-normal weights: N(0, 2/(fan_in + fan_out))."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))


def parameter_blocks(shapes: tuple[tuple[int, ...], ...]) -> tuple[slice, ...]:
    """Return the slices of the flat parameter vector that hold each parameter array.

    Parameters
    ----------
    shapes : tuple of tuple of int
        The shapes of the parameter arrays, in the order of the flat vector
        (a model's ``shapes``).

    Returns
    -------
    tuple of slice
        One slice per array, contiguous and covering the vector.
    """
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(slice(start, start + size))
        start += size
    return tuple(out)


def _unflatten(theta: np.ndarray, shapes: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    return [theta[b].reshape(shape) for b, shape in zip(parameter_blocks(shapes), shapes, strict=True)]


@dataclass(frozen=True)
class DeepMLP:
    r"""A tanh perceptron with several hidden layers: :math:`z = W_L \tanh(\cdots \tanh(W_1 x + b_1) \cdots) + b_L`.

    With 64 inputs, hidden layers (512, 256) and 10 classes,
    ``dim = 167,178``; with (1024, 1024), ``dim = 1,126,410``. The flat
    parameter vector holds, layer after layer, ``W`` (fan-out × fan-in,
    row-major) then ``b`` (see :attr:`shapes` and :attr:`blocks`).

    Parameters
    ----------
    hidden : tuple of int, default (512, 256)
        The widths of the hidden layers (at least one).
    num_inputs : int, default 64
        Input features (the 64 pixels of a digit).
    num_classes : int, default 10
        Classes.
    """

    hidden: tuple[int, ...] = (512, 256)
    num_inputs: int = 64
    num_classes: int = 10

    @property
    def widths(self) -> tuple[int, ...]:
        """The layer widths, inputs first, classes last."""
        return (self.num_inputs, *self.hidden, self.num_classes)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shapes of the parameter arrays, in the order of the flat vector: (W₁, b₁, W₂, b₂, …)."""
        w = self.widths
        out: list[tuple[int, ...]] = []
        for n, m in itertools.pairwise(w):
            out.extend([(m, n), (m,)])
        return tuple(out)

    @property
    def blocks(self) -> tuple[slice, ...]:
        """The slice of the flat vector of each parameter array (:func:`parameter_blocks` of :attr:`shapes`)."""
        return parameter_blocks(self.shapes)

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return sum(math.prod(s) for s in self.shapes)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Draw Glorot-normal weights and zero biases.

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness.

        Returns
        -------
        numpy.ndarray
            θ, shape (dim,), float64.
        """
        parts = []
        for shape in self.shapes:
            if len(shape) == 2:
                parts.append(_glorot(rng, shape[1], shape[0], shape).ravel())
            else:
                parts.append(np.zeros(shape))
        return np.concatenate(parts)

    def _forward(self, theta: np.ndarray, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        arrays = _unflatten(theta, self.shapes)
        weights, biases = arrays[0::2], arrays[1::2]
        acts = [x]
        for w, b in zip(weights[:-1], biases[:-1], strict=True):
            acts.append(np.tanh(acts[-1] @ w.T + b))
        return weights, acts, acts[-1] @ weights[-1].T + biases[-1]

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
        return _softmax(self._forward(theta, x)[2])

    def backward(self, theta: np.ndarray, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        r"""Return :math:`\sum_i J_i^\top \delta_i`, the pull-back of output-space vectors through the network.

        :math:`J_i = \partial z(x_i) / \partial \theta` is the Jacobian of the
        logits of example i (reverse mode, in closed form; one forward pass).

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, num_inputs).
        delta : numpy.ndarray
            δ, shape (batch, num_classes).

        Returns
        -------
        numpy.ndarray
            Shape (dim,), in the layout of θ.
        """
        weights, acts, _ = self._forward(theta, x)
        grads: list[np.ndarray] = []
        upstream = delta
        for layer in range(len(weights) - 1, -1, -1):
            grads.extend([upstream.sum(axis=0), (upstream.T @ acts[layer]).ravel()])
            if layer:
                a = acts[layer]
                upstream = (upstream @ weights[layer]) * (1.0 - a * a)
        return np.concatenate(grads[::-1])


def _patches(a: np.ndarray) -> np.ndarray:
    """3 × 3 patches of a zero-padded (batch, h, w, c) array: shape (batch, h, w, 9c), ordered (dy, dx, c)."""
    _, h, w, _ = a.shape
    pad = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return np.concatenate([pad[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=3)


def _unpatch(g: np.ndarray, channels: int) -> np.ndarray:
    """Adjoint of :func:`_patches`: sum the (batch, h, w, 9c) patch gradients back onto the (batch, h, w, c) input."""
    b, h, w, _ = g.shape
    pad = np.zeros((b, h + 2, w + 2, channels))
    for j, (dy, dx) in enumerate((dy, dx) for dy in range(3) for dx in range(3)):
        pad[:, dy : dy + h, dx : dx + w] += g[..., j * channels : (j + 1) * channels]
    return pad[:, 1:-1, 1:-1]


@dataclass(frozen=True)
class SmallCNN:
    r"""A small convolutional network on the 8 × 8 digits: two 3 × 3 convolutions, a dense layer, the classifier.

    ``conv(1 → c₁) → tanh → conv(c₁ → c₂) → tanh → flatten → dense(64 c₂ → h) → tanh → dense(h → 10)``,
    convolutions with stride 1 and zero padding ("same"). With the defaults
    (c₁, c₂, h) = (16, 32, 64), ``dim = 136,586``. The flat parameter vector
    holds the kernels (c_out × 3 × 3 × c_in, row-major) and biases of the two
    convolutions, then W (h × 64 c₂; the flattened features are ordered
    row, column, channel) and b of the dense layer, then those of the
    classifier (see :attr:`shapes`).

    Parameters
    ----------
    channels : tuple of int, default (16, 32)
        c₁, c₂.
    hidden : int, default 64
        h, the width of the dense layer.
    num_classes : int, default 10
        Classes.
    side : int, default 8
        The images are side × side pixels (8 for digits); ``num_inputs = side²``.
    """

    channels: tuple[int, int] = (16, 32)
    hidden: int = 64
    num_classes: int = 10
    side: int = 8

    @property
    def num_inputs(self) -> int:
        """Input features (side² pixels)."""
        return self.side * self.side

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shapes of the parameter arrays, in the order of the flat vector."""
        c1, c2 = self.channels
        flat = self.side * self.side * c2
        return ((c1, 3, 3, 1), (c1,), (c2, 3, 3, c1), (c2,), (self.hidden, flat), (self.hidden,),
                (self.num_classes, self.hidden), (self.num_classes,))  # fmt: skip

    @property
    def blocks(self) -> tuple[slice, ...]:
        """The slice of the flat vector of each parameter array (:func:`parameter_blocks` of :attr:`shapes`)."""
        return parameter_blocks(self.shapes)

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return sum(math.prod(s) for s in self.shapes)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """Draw Glorot-normal kernels and weights (fan-in and fan-out over the 3 × 3 window), zero biases.

        Parameters
        ----------
        rng : numpy.random.Generator
            The source of randomness.

        Returns
        -------
        numpy.ndarray
            θ, shape (dim,), float64.
        """
        parts = []
        for shape in self.shapes:
            if len(shape) == 4:
                parts.append(_glorot(rng, 9 * shape[3], 9 * shape[0], shape).ravel())
            elif len(shape) == 2:
                parts.append(_glorot(rng, shape[1], shape[0], shape).ravel())
            else:
                parts.append(np.zeros(shape))
        return np.concatenate(parts)

    def _forward(self, theta: np.ndarray, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        k1, b1, k2, b2, w3, b3, w4, b4 = _unflatten(theta, self.shapes)
        c1, c2 = self.channels
        img = x.reshape(x.shape[0], self.side, self.side, 1)
        p1 = _patches(img)
        a1 = np.tanh(p1 @ k1.reshape(c1, -1).T + b1)
        p2 = _patches(a1)
        a2 = np.tanh(p2 @ k2.reshape(c2, -1).T + b2)
        f = a2.reshape(x.shape[0], -1)
        a3 = np.tanh(f @ w3.T + b3)
        return [k1, k2, w3, w4], [p1, a1, p2, a2, f, a3], a3 @ w4.T + b4

    def probabilities(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        r"""Return the predictive probabilities :math:`p_\theta(y \mid x)` of a batch.

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, side²).

        Returns
        -------
        numpy.ndarray
            Shape (batch, num_classes); each row sums to 1.
        """
        return _softmax(self._forward(theta, x)[2])

    def backward(self, theta: np.ndarray, x: np.ndarray, delta: np.ndarray) -> np.ndarray:
        r"""Return :math:`\sum_i J_i^\top \delta_i`, the pull-back of output-space vectors through the network.

        :math:`J_i = \partial z(x_i) / \partial \theta` is the Jacobian of the
        logits of example i (reverse mode, in closed form; one forward pass).

        Parameters
        ----------
        theta : numpy.ndarray
            θ, shape (dim,).
        x : numpy.ndarray
            Inputs, shape (batch, side²).
        delta : numpy.ndarray
            δ, shape (batch, num_classes).

        Returns
        -------
        numpy.ndarray
            Shape (dim,), in the layout of θ.
        """
        (_, k2, w3, w4), (p1, a1, p2, a2, f, a3), _ = self._forward(theta, x)
        c1, c2 = self.channels
        g4 = delta.T @ a3
        d3 = (delta @ w4) * (1.0 - a3 * a3)
        g3 = d3.T @ f
        d2 = (d3 @ w3).reshape(a2.shape) * (1.0 - a2 * a2)
        g2 = d2.reshape(-1, c2).T @ p2.reshape(-1, 9 * c1)
        d1 = _unpatch(d2 @ k2.reshape(c2, -1), c1) * (1.0 - a1 * a1)
        g1 = d1.reshape(-1, c1).T @ p1.reshape(-1, 9)
        parts = [g1, d1.sum(axis=(0, 1, 2)), g2, d2.sum(axis=(0, 1, 2)), g3, d3.sum(axis=0), g4, delta.sum(axis=0)]
        return np.concatenate([q.ravel() for q in parts])


def fisher_stream(
    model: SoftmaxRegression | MLP | DeepMLP | SmallCNN,
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
    model : SoftmaxRegression, MLP, DeepMLP or SmallCNN
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


class LargeStream(NamedTuple):
    """A curvature stream of a model with 10⁵–10⁶ parameters (an entry of :data:`LARGE_STREAMS`).

    Parameters
    ----------
    model : DeepMLP or SmallCNN
        The model (its ``dim`` is the stream's).
    per_tensor : bool
        Whether the curvature is treated per parameter array.
    learning_rate : float
        Adam's step size.
    """

    model: DeepMLP | SmallCNN
    """The model trained and differentiated; ``model.dim`` is d."""
    per_tensor: bool
    """Whether each parameter array is a block of its own (True) or the whole model is one block (False).

    Per array (``model.blocks``) is the block-diagonal structure of the authors' code: block j's curvature
    vector is ``d_t[model.blocks[j]]``, the same √B-scaled batch-mean sampled-label gradient restricted to
    that array."""
    learning_rate: float
    """Adam's step size along the trajectory."""


_WIDE_MLP = DeepMLP(hidden=(512, 256))
_MLP_1M = DeepMLP(hidden=(1024, 1024))
_CNN = SmallCNN()

LARGE_STREAMS: dict[str, LargeStream] = {
    "digits-mlp-wide": LargeStream(_WIDE_MLP, per_tensor=False, learning_rate=1e-3),
    "digits-mlp-wide-blocks": LargeStream(_WIDE_MLP, per_tensor=True, learning_rate=1e-3),
    "digits-cnn": LargeStream(_CNN, per_tensor=False, learning_rate=1e-3),
    "digits-cnn-blocks": LargeStream(_CNN, per_tensor=True, learning_rate=1e-3),
    "digits-mlp-1m": LargeStream(_MLP_1M, per_tensor=False, learning_rate=1e-3),
}
"""Streams at scale (d = 136,586 to 1,126,410), by name, for :func:`make_large_stream`.

They are kept apart from :data:`STREAMS` so that the default study is unchanged: their exact EMA cannot
be a dense d × d matrix (use :class:`~lowrank_ggn.studies.WindowEMA`). ``digits-mlp-wide``:
:class:`DeepMLP` 64–512–256–10 (d = 167,178); ``digits-cnn``: :class:`SmallCNN` (d = 136,586);
``digits-mlp-1m``: :class:`DeepMLP` 64–1024–1024–10 (d = 1,126,410); ``-blocks``: the same stream, one
block per parameter array (:attr:`LargeStream.per_tensor`). All use batches of 32 and Adam with step
size 1e-3 (:func:`fisher_stream`)."""


def _large(name: str) -> LargeStream:
    if name not in LARGE_STREAMS:
        msg = f"stream must be one of {tuple(LARGE_STREAMS)}, got {name!r}"
        raise ValueError(msg)
    return LARGE_STREAMS[name]


def large_stream_blocks(name: str) -> tuple[slice, ...]:
    """Return the blocks of a large stream: one slice of d_t per block.

    Parameters
    ----------
    name : str
        A key of :data:`LARGE_STREAMS`.

    Returns
    -------
    tuple of slice
        ``(slice(0, d),)`` for the whole-model streams; one slice per
        parameter array, in the order of θ, for the ``-blocks`` streams.

    Raises
    ------
    ValueError
        If ``name`` is not a large stream.
    """
    spec = _large(name)
    return spec.model.blocks if spec.per_tensor else (slice(0, spec.model.dim),)


def make_large_stream(name: str, *, steps: int, seed: int, batch_size: int = 32) -> Iterator[StreamStep]:
    """Return a large stream: the sampled-label Fisher vectors (Eq 8) of its model along an Adam trajectory.

    Parameters
    ----------
    name : str
        A key of :data:`LARGE_STREAMS`.
    steps : int
        Number of steps T.
    seed : int
        Random seed (parameters, batches, sampled labels).
    batch_size : int, default 32
        :math:`|B_t|`, the mini-batch size.

    Returns
    -------
    iterator of StreamStep
        :func:`fisher_stream` of the stream's model, lazily; each ``curvature``
        is the whole d_t (split it with :func:`large_stream_blocks`).

    Raises
    ------
    ValueError
        If ``name`` is not a large stream (raised at once, not on iteration).
    """
    spec = _large(name)
    return fisher_stream(spec.model, steps=steps, seed=seed, batch_size=batch_size, learning_rate=spec.learning_rate)
