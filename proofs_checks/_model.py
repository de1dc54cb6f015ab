r"""A small softmax classifier written against the array API: the model of the paper's Eq 1–2.

:math:`p_\theta(y \mid x) = \operatorname{softmax}(f(\theta; x))_y` with the
one-hidden-layer network

.. math:: f(\theta; x) = W_2 \tanh(W_1 x + b_1) + b_2, \qquad
   \theta = (\operatorname{vec} W_1, b_1, \operatorname{vec} W_2, b_2) \in \mathbb{R}^d,

which is non-linear in θ, so the residual term of the Hessian decomposition
does not vanish and the loss is non-convex. The Jacobian
:math:`\partial f / \partial \theta` is written out analytically; second
derivatives are taken by the complex step,
:math:`\partial_k F(\theta) = \operatorname{Im} F(\theta + i h e_k) / h`, which
has no subtractive cancellation and is exact to rounding for
:math:`h = 10^{-20}`, so the Hessian is obtained independently of the
Gauss–Newton formula it is compared with. Every function takes a batch of
parameter vectors, shape ``(P, d)``, real or complex, on any backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lowrank_ggn.backends import array_namespace
from proofs_checks._context import Context

__all__ = ["MLP", "complex_step", "one_hot"]


def _real(xp: Any, x: Any) -> Any:
    return xp.real(x) if xp.isdtype(x.dtype, "complex floating") else x


def one_hot(xp: Any, labels: Any, classes: int, dtype: Any) -> Any:
    """One-hot rows (m, classes) of integer labels (m,)."""
    return xp.astype(labels[:, None] == xp.arange(classes, dtype=labels.dtype)[None, :], dtype)


@dataclass(frozen=True)
class MLP:
    """Shapes of the softmax network ``f = W₂ tanh(W₁x + b₁) + b₂``."""

    n_in: int
    n_hidden: int
    n_classes: int

    @property
    def dim(self) -> int:
        """Number of parameters d."""
        h, n, c = self.n_hidden, self.n_in, self.n_classes
        return h * n + h + c * h + c

    def init(self, rng: np.random.Generator, scale: float = 1.5) -> np.ndarray:
        """Draw parameters (NumPy float64) with hidden units in their non-linear range."""
        h, n, c = self.n_hidden, self.n_in, self.n_classes
        w1 = scale * rng.standard_normal((h, n)) / np.sqrt(n)
        b1 = 0.5 * rng.standard_normal(h)
        w2 = scale * rng.standard_normal((c, h)) / np.sqrt(h)
        b2 = 0.5 * rng.standard_normal(c)
        return np.concatenate([w1.ravel(), b1, w2.ravel(), b2])

    def _unpack(self, xp: Any, theta: Any) -> tuple[Any, Any, Any, Any]:
        h, n, c = self.n_hidden, self.n_in, self.n_classes
        p = theta.shape[0]
        o1, o2, o3 = h * n, h * n + h, h * n + h + c * h
        w1 = xp.reshape(theta[:, :o1], (p, h, n))
        w2 = xp.reshape(theta[:, o2:o3], (p, c, h))
        return w1, theta[:, o1:o2], w2, theta[:, o3:]

    def forward(self, theta: Any, x: Any) -> tuple[Any, Any]:
        """Hidden activations (P, m, h) and logits f (P, m, c) for inputs x (m, n)."""
        xp = array_namespace(theta)
        w1, b1, w2, b2 = self._unpack(xp, theta)
        xc = xp.astype(x, theta.dtype)
        hid = xp.tanh(xp.matmul(xc, xp.matrix_transpose(w1)) + b1[:, None, :])
        return hid, xp.matmul(hid, xp.matrix_transpose(w2)) + b2[:, None, :]

    @staticmethod
    def log_softmax(f: Any) -> Any:
        """``log softmax`` along the last axis (complex-step safe: the shift is a real constant)."""
        xp = array_namespace(f)
        z = f - xp.max(_real(xp, f), axis=-1, keepdims=True)
        return z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))

    def jacobian(self, theta: Any, x: Any) -> Any:
        r"""Return the Jacobian :math:`\partial f(\theta; x_i) / \partial \theta`, shape (P, m, c, d), analytically."""
        xp = array_namespace(theta)
        h, n, c = self.n_hidden, self.n_in, self.n_classes
        _, _, w2, _ = self._unpack(xp, theta)
        hid, _ = self.forward(theta, x)
        p, m = hid.shape[0], hid.shape[1]
        s = 1 - hid * hid
        xc = xp.astype(x, theta.dtype)
        eye = xp.eye(c, dtype=theta.dtype)
        g_w1 = w2[:, None, :, :, None] * s[:, :, None, :, None] * xc[None, :, None, None, :]
        g_b1 = w2[:, None, :, :] * s[:, :, None, :]
        g_w2 = eye[None, None, :, :, None] * hid[:, :, None, None, :]
        g_b2 = xp.broadcast_to(eye[None, None, :, :], (p, m, c, c))
        return xp.concat([xp.reshape(g_w1, (p, m, c, h * n)), g_b1, xp.reshape(g_w2, (p, m, c, c * h)), g_b2], axis=-1)

    def probs(self, theta: Any, x: Any) -> Any:
        """Class probabilities (P, m, c)."""
        xp = array_namespace(theta)
        return xp.exp(self.log_softmax(self.forward(theta, x)[1]))

    def loss(self, theta: Any, x: Any, y: Any) -> Any:
        r"""Mean negative log-likelihood (Eq 2), shape (P,); ``y`` one-hot (m, c)."""
        xp = array_namespace(theta)
        logp = self.log_softmax(self.forward(theta, x)[1])
        return -xp.sum(xp.astype(y, logp.dtype)[None, :, :] * logp, axis=(1, 2)) / x.shape[0]

    def grad(self, theta: Any, x: Any, y: Any, *, residual: Any | None = None) -> Any:
        r"""Gradient of the loss, :math:`\frac1m \sum_i J_i^\top (p_i - y_i)`, shape (P, d).

        With ``residual`` (m, c) given, ``p_i − y_i`` is replaced by that fixed
        array: the derivative of the result is then the residual term
        :math:`\frac1m\sum_i\sum_j r_{ij}\,\partial^2 f^{(j)}_i/\partial\theta^2` of the Hessian.
        """
        xp = array_namespace(theta)
        jac = self.jacobian(theta, x)
        if residual is None:
            r = self.probs(theta, x) - xp.astype(y, theta.dtype)[None, :, :]
        else:
            r = xp.astype(residual, theta.dtype)[None, :, :]
        return xp.sum(jac * r[..., None], axis=(1, 2)) / x.shape[0]

    def scores(self, theta: Any, x: Any) -> Any:
        r"""Score vectors :math:`\nabla_\theta \log p_\theta(k \mid x_i)` for every sample and label, (m, c, d).

        ``theta`` has shape (1, d): :math:`J_i^\top (e_k - p_i)`.
        """
        xp = array_namespace(theta)
        jac = self.jacobian(theta, x)[0, ...]
        p = self.probs(theta, x)[0, ...]
        c = self.n_classes
        a = xp.eye(c, dtype=theta.dtype)[None, :, :] - p[:, None, :]
        return xp.matmul(a, jac)

    def output_hessian(self, theta: Any, x: Any) -> Any:
        r"""Hessian of the per-sample loss in the logits, :math:`\operatorname{diag}(p_i) - p_i p_i^\top`, (m, c, c)."""
        xp = array_namespace(theta)
        p = self.probs(theta, x)[0, ...]
        eye = xp.eye(self.n_classes, dtype=theta.dtype)
        return eye[None, :, :] * p[:, None, :] - p[:, :, None] * p[:, None, :]

    def ggn(self, theta: Any, x: Any) -> Any:
        r"""Return the generalized Gauss–Newton matrix of Eq 4, :math:`\frac1m \sum_i J_i^\top H_i J_i`, (d, d)."""
        xp = array_namespace(theta)
        jac = self.jacobian(theta, x)[0, ...]
        per = xp.matmul(xp.matrix_transpose(jac), xp.matmul(self.output_hessian(theta, x), jac))
        return xp.sum(per, axis=0) / x.shape[0]


def complex_step(ctx: Context, fn: Any, theta: np.ndarray, h: float = 1e-20) -> np.ndarray:
    r"""Differentiate ``fn`` at ``theta`` along every coordinate by the complex step.

    .. math:: \partial_k F(\theta) = \operatorname{Im} F(\theta + i h e_k) / h + O(h^2)

    Parameters
    ----------
    ctx : Context
        Backend and precision (the complex dtype of the run's precision is used).
    fn : callable
        Maps a batch of (complex) parameter vectors, shape (P, d), to an array
        of shape (P, ...), with complex-analytic operations only.
    theta : ndarray, shape (d,)
        The point.
    h : float
        Step; no cancellation occurs, so it can be tiny.

    Returns
    -------
    ndarray, shape (d, ...)
        Row k is the derivative along coordinate k (NumPy float64).
    """
    d = theta.shape[0]
    pert = theta[None, :] + 1j * h * np.eye(d)
    out = ctx.jit(fn)(ctx.asarray(pert, complex_=True))
    return ctx.to_numpy(ctx.xp.imag(out)) / h
