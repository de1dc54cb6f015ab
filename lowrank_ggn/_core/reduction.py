r"""Reductions over the parameter axis, which may be split across devices.

Ginger and QNG touch the long axis (``dim``) of their states only in two kinds
of operation:

* **row-local** ones — the rotation ``U' = [U p] V``, ``v − Uc``, the factor
  products ``v − β (qᵀv) q`` — where each row needs only its own entries;
* **reductions** over ``dim`` — ``c = Uᵀv``, ``‖v‖``, ``qᵀv``,
  ``all(isfinite(d))``, ``max|v|`` — whose results are τ-vectors or scalars.

Everything else, the (τ+1)×(τ+1) eigenproblem included, works on those small
results. So when the rows of ``U`` (and the entries of every ``dim``-vector)
are split across devices, each device can run the unchanged algorithm on its
own rows, provided that every reduction is completed across devices:

.. math:: U^\top v = \sum_{k=1}^{n} U_k^\top v_k ,

an all-reduce of τ numbers. A :class:`Reduction` is that completion step. The
default, :data:`LOCAL`, does nothing (the whole axis is on one device); the
JAX front-end (:mod:`lowrank_ggn.sharding`) supplies ``lax.psum`` inside
``shard_map`` and the PyTorch front-end (:mod:`lowrank_ggn.distributed`)
supplies ``torch.distributed.all_reduce``.

Every device then computes the small problems from bitwise-identical inputs,
so the replicated parts of the state (eigenvalues, counters) stay identical,
and every branch on them is taken by all devices together.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lowrank_ggn._core.aliases import Array, ArrayNamespace

__all__ = ["LOCAL", "AllReduce", "Reduction"]


class Reduction:
    """Completes reductions over ``dim`` when the whole axis is on one device (the identity)."""

    def sum(self, partial: Array) -> Array:
        """Return the sum over all shards of ``partial``, a sum over this shard's rows."""
        return partial

    def all(self, partial: Array) -> Array:
        """Return the logical AND over all shards of a boolean ``partial``."""
        return partial

    def max(self, partial: Array) -> Array:
        """Return the elementwise maximum over all shards of ``partial``, a maximum over this shard's rows."""
        return partial

    def norm(self, xp: ArrayNamespace, x: Array) -> Array:
        """Return the Euclidean norm of the (split) vector ``x``."""
        return xp.linalg.vector_norm(x)

    def sum_together(self, xp: ArrayNamespace, *partials: Array) -> tuple[Array, ...]:  # noqa: ARG002
        """Return the sums over all shards of several ``partial`` arrays, in their shapes."""
        return tuple(self.sum(p) for p in partials)


class AllReduce(Reduction):
    """Completes reductions over ``dim`` with collective operations across shards.

    Parameters
    ----------
    sum_fn : callable
        Array -> array: the elementwise sum of the argument over all shards
        (an all-reduce with SUM), returned on every shard.
    all_fn : callable
        Boolean array -> boolean array: the logical AND over all shards.
    max_fn : callable
        Array -> array: the elementwise maximum over all shards (an
        all-reduce with MAX), returned on every shard.
    """

    def __init__(
        self, sum_fn: Callable[[Array], Array], all_fn: Callable[[Array], Array], max_fn: Callable[[Array], Array]
    ) -> None:
        self._sum = sum_fn
        self._all = all_fn
        self._max = max_fn

    def sum(self, partial: Array) -> Array:
        """Return the sum over all shards of ``partial`` (one all-reduce)."""
        return self._sum(partial)

    def all(self, partial: Array) -> Array:
        """Return the logical AND over all shards of ``partial`` (one all-reduce)."""
        return self._all(partial)

    def max(self, partial: Array) -> Array:
        """Return the elementwise maximum over all shards of ``partial`` (one all-reduce)."""
        return self._max(partial)

    def norm(self, xp: ArrayNamespace, x: Array) -> Array:
        """Return ``sqrt(Σ_k ‖x_k‖²)`` (one all-reduce of a scalar)."""
        return xp.sqrt(self._sum(xp.sum(x * x)))

    def sum_together(self, xp: ArrayNamespace, *partials: Array) -> tuple[Array, ...]:
        """Return the sums over all shards of several same-dtype ``partial`` arrays: one all-reduce.

        The arrays are flattened into one vector, summed, and split back into
        their shapes (one collective instead of one per array).
        """
        sizes = [math.prod(p.shape) for p in partials]
        total = self._sum(xp.concat([xp.reshape(p, (-1,)) for p in partials]))
        out, start = [], 0
        for p, n in zip(partials, sizes, strict=True):
            out.append(xp.reshape(total[start : start + n], p.shape))
            start += n
        return tuple(out)


LOCAL = Reduction()
"""The identity reduction: the whole ``dim`` axis is on one device."""
