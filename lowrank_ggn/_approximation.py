r"""The approximation protocol: one object per method, one interface for every front-end.

A low-rank curvature approximation keeps a state that folds in curvature
vectors ``d_t`` (Eq 7: ``M_t = α M_{t−1} + (1−α) d_t d_tᵀ``, approximated) and
applies the inverse of its damped curvature to gradients. In the spirit of
optax's ``GradientTransformation`` and matfree's algorithm factories, each
method is a small immutable object built by a factory — :func:`ginger`,
:func:`ginger_product`, :func:`qng` — holding its hyper-parameters, with

``init(dim, *, xp=None, dtype=None, device=None)``
    the empty state (a NamedTuple of arrays, a JAX pytree);
``update(state, d)``
    the state with ``d`` folded in;
``update_precondition(state, d, g, *, damping)``
    ``(new_state, y)``, ``y`` the preconditioned ``g`` of the new state, in
    one fused step where the method has one;
``precondition(state, g, *, damping)`` and ``operator(state, *, damping)``
    the query, and the damped curvature as an operator object
    (:class:`~lowrank_ggn.DampedLowRank`: ``matvec``, ``solve``, ``dense``).

These methods check their arguments, like the flat functions
(:func:`~lowrank_ggn.ginger_update` and friends, which they equal). The
front-ends — the optax and ``torch.optim`` optimisers, the JAX and
``torch.distributed`` sharded steps, the studies — are written once against the
protocol's unchecked counterparts, which take the array namespace first and
complete their sums over the parameter axis through ``reduce``:

``fold(xp, state, d, *, reduce=LOCAL, donate=False)``,
``fold_precondition(xp, state, d, g, *, damping, reduce=LOCAL, donate=False)``,
``solve(xp, state, g, *, damping, reduce=LOCAL)``.

Attributes every approximation has: ``name``, ``rank``, ``decay``,
``needs_damping`` (False for QNG, whose damping is implicit: pass
``damping=None``), ``shardable`` (whether ``reduce`` may be a collective) and
``with_rank(rank)`` (a copy with another rank, for blocks smaller than the rank).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from lowrank_ggn._core import ginger as core_ginger
from lowrank_ggn._core import product as core_product
from lowrank_ggn._core import qng as core_qng
from lowrank_ggn._core.aliases import Array, ArrayNamespace, Device, DType
from lowrank_ggn._core.checks import check_decay, check_like, check_qng_state
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn._core.options import check_reorthonormalize_every, resolve_reorthonormalize_every
from lowrank_ggn._core.reduction import LOCAL, Reduction
from lowrank_ggn._ginger import (
    GingerState,
    ginger_init,
    ginger_precondition,
    ginger_update,
    ginger_update_precondition,
)
from lowrank_ggn._operator import DampedLowRank
from lowrank_ggn._product import (
    GingerProductState,
    ginger_product_init,
    ginger_product_precondition,
    ginger_product_to_state,
    ginger_product_update,
    ginger_product_update_precondition,
)
from lowrank_ggn._qng import (
    QNGState,
    qng_dense,
    qng_init,
    qng_precondition,
    qng_update,
)

__all__ = [
    "QNG",
    "FactorProduct",
    "Ginger",
    "GingerProduct",
    "ginger",
    "ginger_product",
    "qng",
]


def _check_rank(rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        msg = f"rank must be a positive integer, got {rank!r}"
        raise ValueError(msg) if isinstance(rank, int) and not isinstance(rank, bool) else TypeError(msg)
    return rank


def _no_damping(damping: Any) -> None:
    if damping is not None:
        msg = "QNG's damping is implicit (its curvature is at least decay**k I); pass damping=None"
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class Ginger:
    r"""Ginger: the best rank-τ approximation of the EMA, by Brand's update (eigen path).

    Built by :func:`ginger`; see the module documentation for the protocol.
    """

    rank: int
    decay: float
    reorthonormalize_every: int | Literal["auto"] | None = "auto"
    name: ClassVar[str] = "ginger"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = True
    state_type: ClassVar[type] = GingerState

    def with_rank(self, rank: int) -> Ginger:
        """A copy with another rank."""
        return dataclasses.replace(self, rank=_check_rank(rank))

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> GingerState:
        """The empty state (see :func:`lowrank_ggn.ginger_init`)."""
        return ginger_init(dim, self.rank, xp=xp, dtype=dtype, device=device)

    def update(self, state: GingerState, d: Array) -> GingerState:
        """Fold ``d`` into the state (see :func:`lowrank_ggn.ginger_update`)."""
        return ginger_update(state, d, decay=self.decay, reorthonormalize_every=self.reorthonormalize_every)

    def update_precondition(self, state: GingerState, d: Array, g: Array, *, damping: Any) -> tuple[GingerState, Array]:
        """Fold ``d``, then precondition ``g`` with the new state: the fused step (:func:`lowrank_ggn.ginger_update_precondition`)."""
        return ginger_update_precondition(
            state, d, g, decay=self.decay, damping=damping, reorthonormalize_every=self.reorthonormalize_every
        )

    def precondition(self, state: GingerState, g: Array, *, damping: Any) -> Array:
        """``(γI + U diag(σ) Uᵀ)⁻¹ g`` (see :func:`lowrank_ggn.ginger_precondition`)."""
        return ginger_precondition(state, g, damping=damping)

    def operator(self, state: GingerState, *, damping: Any) -> DampedLowRank:
        """The damped curvature ``γI + U diag(σ) Uᵀ`` as an operator (no copy of the state)."""
        return DampedLowRank(diagonal=damping, basis=state.basis, eigvals=state.eigvals)

    # -- the unchecked engine: namespace first, sums completed through `reduce` --
    def fold(
        self, xp: ArrayNamespace, state: GingerState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> GingerState:
        """Unchecked :meth:`update` (``d`` already in the state's dtype)."""
        every = resolve_reorthonormalize_every(xp, state.basis.dtype, self.reorthonormalize_every)
        return core_ginger.update(
            xp, state, d, decay=self.decay, reorthonormalize_every=every, reduce=reduce, donate=donate
        )

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: GingerState,
        d: Array,
        g: Array,
        *,
        damping: Any,
        reduce: Reduction = LOCAL,
        donate: bool = False,
    ) -> tuple[GingerState, Array]:
        """Unchecked :meth:`update_precondition`: one fused step, two passes over the basis."""
        every = resolve_reorthonormalize_every(xp, state.basis.dtype, self.reorthonormalize_every)
        return core_ginger.update_precondition(
            xp,
            state,
            d,
            g,
            decay=self.decay,
            damping=damping,
            reorthonormalize_every=every,
            reduce=reduce,
            donate=donate,
        )

    def solve(
        self, xp: ArrayNamespace, state: GingerState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        """Unchecked :meth:`precondition`."""
        return core_ginger.precondition(xp, state, g, damping=damping, reduce=reduce)


@dataclasses.dataclass(frozen=True)
class GingerProduct:
    r"""Ginger in product form ``U = W Q``: O(dτ) amortised updates, the same results to working precision.

    Built by :func:`ginger_product`. Runs on one device (``shardable`` is False).
    """

    rank: int
    decay: float
    capacity: int | None = None
    name: ClassVar[str] = "ginger-product"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = False
    state_type: ClassVar[type] = GingerProductState

    def with_rank(self, rank: int) -> GingerProduct:
        """A copy with another rank (the capacity is reset to its default)."""
        return dataclasses.replace(self, rank=_check_rank(rank), capacity=None)

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> GingerProductState:
        """The empty state (see :func:`lowrank_ggn.ginger_product_init`)."""
        return ginger_product_init(dim, self.rank, capacity=self.capacity, xp=xp, dtype=dtype, device=device)

    def update(self, state: GingerProductState, d: Array) -> GingerProductState:
        """Fold ``d`` into the state (see :func:`lowrank_ggn.ginger_product_update`)."""
        return ginger_product_update(state, d, decay=self.decay)

    def update_precondition(
        self, state: GingerProductState, d: Array, g: Array, *, damping: Any
    ) -> tuple[GingerProductState, Array]:
        """The fused step in product form (see :func:`lowrank_ggn.ginger_product_update_precondition`)."""
        return ginger_product_update_precondition(state, d, g, decay=self.decay, damping=damping)

    def precondition(self, state: GingerProductState, g: Array, *, damping: Any) -> Array:
        """``(γI + U diag(σ) Uᵀ)⁻¹ g`` with ``U = WQ``."""
        return ginger_product_precondition(state, g, damping=damping)

    def operator(self, state: GingerProductState, *, damping: Any) -> DampedLowRank:
        """The damped curvature as an operator; forms ``U = WQ`` (one product, O(dim · capacity · rank))."""
        direct = ginger_product_to_state(state)
        return DampedLowRank(diagonal=damping, basis=direct.basis, eigvals=direct.eigvals)

    def fold(
        self,
        xp: ArrayNamespace,
        state: GingerProductState,
        d: Array,
        *,
        reduce: Reduction = LOCAL,
        donate: bool = False,
    ) -> GingerProductState:
        """Unchecked :meth:`update` (local reduction only)."""
        _local_only(reduce)
        return core_product.update(xp, state, d, decay=self.decay, donate=donate)

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: GingerProductState,
        d: Array,
        g: Array,
        *,
        damping: Any,
        reduce: Reduction = LOCAL,
        donate: bool = False,
    ) -> tuple[GingerProductState, Array]:
        """Unchecked :meth:`update_precondition` (local reduction only)."""
        _local_only(reduce)
        return core_product.update_precondition(xp, state, d, g, decay=self.decay, damping=damping, donate=donate)

    def solve(
        self, xp: ArrayNamespace, state: GingerProductState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        """Unchecked :meth:`precondition` (local reduction only)."""
        _local_only(reduce)
        return core_product.precondition(xp, state, g, as_scalar(xp, damping, state.columns))


@dataclasses.dataclass(frozen=True)
class QNG:
    r"""QNG (He et al., 2022; the paper's §2.2, corrected): a window of τ rank-one factors.

    Built by :func:`qng`. Its damping is implicit (``ÂÂᵀ ⪰ α^k I``): the
    methods take ``damping=None``.
    """

    rank: int
    decay: float
    name: ClassVar[str] = "qng"
    needs_damping: ClassVar[bool] = False
    shardable: ClassVar[bool] = True
    state_type: ClassVar[type] = QNGState

    def with_rank(self, rank: int) -> QNG:
        """A copy with another window length."""
        return dataclasses.replace(self, rank=_check_rank(rank))

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> QNGState:
        """The empty window (see :func:`lowrank_ggn.qng_init`)."""
        return qng_init(dim, self.rank, xp=xp, dtype=dtype, device=device)

    def update(self, state: QNGState, d: Array) -> QNGState:
        """Append the factor of ``d`` (see :func:`lowrank_ggn.qng_update`)."""
        return qng_update(state, d, decay=self.decay)

    def update_precondition(
        self, state: QNGState, d: Array, g: Array, *, damping: Any = None
    ) -> tuple[QNGState, Array]:
        """Append the factor of ``d``, then ``(ÂÂᵀ)⁻¹ g`` of the new window."""
        _no_damping(damping)
        new = qng_update(state, d, decay=self.decay)
        return new, qng_precondition(new, g)

    def precondition(self, state: QNGState, g: Array, *, damping: Any = None) -> Array:
        """``(ÂÂᵀ)⁻¹ g`` (see :func:`lowrank_ggn.qng_precondition`)."""
        _no_damping(damping)
        return qng_precondition(state, g)

    def operator(self, state: QNGState, *, damping: Any = None) -> FactorProduct:
        """The curvature ``ÂÂᵀ`` as an operator."""
        _no_damping(damping)
        check_qng_state(state)
        return FactorProduct(state)

    def fold(
        self, xp: ArrayNamespace, state: QNGState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> QNGState:  # noqa: ARG002
        """Unchecked :meth:`update` (``donate`` has no effect: the window is a ring of small arrays)."""
        return core_qng.update(xp, state, d, decay=self.decay, reduce=reduce)

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: QNGState,
        d: Array,
        g: Array,
        *,
        damping: Any = None,  # noqa: ARG002
        reduce: Reduction = LOCAL,
        donate: bool = False,  # noqa: ARG002
    ) -> tuple[QNGState, Array]:
        """Unchecked :meth:`update_precondition`."""
        new = core_qng.update(xp, state, d, decay=self.decay, reduce=reduce)
        return new, core_qng.precondition(new, g, reduce=reduce)

    def solve(
        self, xp: ArrayNamespace, state: QNGState, g: Array, *, damping: Any = None, reduce: Reduction = LOCAL
    ) -> Array:  # noqa: ARG002
        """Unchecked :meth:`precondition`."""
        return core_qng.precondition(state, g, reduce=reduce)


class FactorProduct:
    r"""QNG's curvature ``ÂÂᵀ`` as an operator: ``matvec``, ``solve``, ``dense``.

    Parameters
    ----------
    state : QNGState
        The window of factors.
    """

    def __init__(self, state: QNGState) -> None:
        self.state = state

    @property
    def shape(self) -> tuple[int, int]:
        """``(dim, dim)``."""
        dim = self.state.factors.shape[1]
        return (dim, dim)

    def matvec(self, v: Array) -> Array:
        """``ÂÂᵀ v`` for ``v`` of shape (dim,) or (dim, k). Cost O(dim · rank · k)."""
        check_qng_state(self.state)
        dim = self.state.factors.shape[1]
        check_like(v, "v", self.state.factors, shapes=((dim,), (dim, -1)))
        half = core_qng.factor_product(self.state, v, inverse=False, transpose=True)
        return core_qng.factor_product(self.state, half, inverse=False, transpose=False)

    def solve(self, g: Array) -> Array:
        """``(ÂÂᵀ)⁻¹ g`` for ``g`` of shape (dim,) or (dim, k). Cost O(dim · rank · k)."""
        return qng_precondition(self.state, g)

    def dense(self) -> Array:
        """``ÂÂᵀ`` as a dim × dim array."""
        return qng_dense(self.state)


def _local_only(reduce: Reduction) -> None:
    if reduce is not LOCAL:
        msg = "the product form runs on one device; shard the direct form (lg.ginger) instead"
        raise ValueError(msg)


def ginger(*, rank: int, decay: float, reorthonormalize_every: int | Literal["auto"] | None = "auto") -> Ginger:
    r"""Ginger (eigen path) in the approximation protocol.

    Parameters
    ----------
    rank : int
        τ ≥ 1 (each state needs ``rank < dim``).
    decay : float
        α ∈ (0, 1), the EMA decay (Eq 7).
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update`.

    Returns
    -------
    Ginger
        ``init``, ``update``, ``update_precondition``, ``precondition``,
        ``operator`` (see the module documentation).

    Raises
    ------
    ValueError, TypeError
        For an invalid option, naming it.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank_ggn as lg
    >>> approx = lg.ginger(rank=4, decay=0.99)
    >>> state = approx.init(100)
    >>> rng = np.random.default_rng(0)
    >>> state, y = approx.update_precondition(state, rng.standard_normal(100), rng.standard_normal(100), damping=1e-2)
    >>> op = approx.operator(state, damping=1e-2)
    >>> bool(np.allclose(op.matvec(y), op.matvec(op.solve(op.matvec(y)))))
    True
    """
    check_decay(decay)
    return Ginger(
        rank=_check_rank(rank),
        decay=float(decay),
        reorthonormalize_every=check_reorthonormalize_every(reorthonormalize_every),
    )


def ginger_product(*, rank: int, decay: float, capacity: int | None = None) -> GingerProduct:
    """Ginger in product form ``U = WQ`` in the approximation protocol.

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    capacity : int, optional
        Columns of the buffer for W (see :func:`lowrank_ggn.ginger_product_init`).

    Returns
    -------
    GingerProduct
    """
    check_decay(decay)
    rank = _check_rank(rank)
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= rank):
        msg = f"capacity must be an integer above rank={rank}, got {capacity!r}"
        raise ValueError(msg)
    return GingerProduct(rank=rank, decay=float(decay), capacity=capacity)


def qng(*, rank: int, decay: float) -> QNG:
    """QNG in the approximation protocol (its damping is implicit: pass ``damping=None``).

    Parameters
    ----------
    rank : int
        τ ≥ 1, the window length.
    decay : float
        α ∈ (0, 1).

    Returns
    -------
    QNG
    """
    check_decay(decay)
    return QNG(rank=_check_rank(rank), decay=float(decay))
