r"""The approximation protocol: one object per method, one interface for every front-end.

A low-rank curvature approximation keeps a state that folds in curvature
vectors ``d_t`` (Eq 7: ``M_t = α M_{t−1} + (1−α) d_t d_tᵀ``, approximated) and
applies the inverse of its damped curvature to gradients. In the spirit of
optax's ``GradientTransformation`` and matfree's algorithm factories, each
method is a small immutable object built by a factory — :func:`ginger`,
:func:`ginger_product`, :func:`qng`, :func:`frequent_directions`,
:func:`nystrom`, :func:`ginger_diagonal`, :func:`diagonal` (compared on the
page "Choosing an approximation") — holding its hyper-parameters, with

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
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import numpy as np

from lowrank_ggn._core import diagonal as core_diagonal
from lowrank_ggn._core import frequent_directions as core_fd
from lowrank_ggn._core import ginger as core_ginger
from lowrank_ggn._core import nystrom as core_nystrom
from lowrank_ggn._core import operator as core_operator
from lowrank_ggn._core import product as core_product
from lowrank_ggn._core import qng as core_qng
from lowrank_ggn._core.aliases import Array, ArrayNamespace, Device, DType
from lowrank_ggn._core.checks import (
    cast_like,
    check_damping,
    check_decay,
    check_dim_rank,
    check_ginger_state,
    check_like,
    check_qng_state,
    has_fields,
)
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
from lowrank_ggn.backends import canonical_float_dtype, floating_point_errors_ignored, resolve_namespace

__all__ = [
    "QNG",
    "Diagonal",
    "DiagonalState",
    "FactorProduct",
    "FrequentDirections",
    "Ginger",
    "GingerDiagonal",
    "GingerDiagonalState",
    "GingerProduct",
    "Nystrom",
    "NystromState",
    "diagonal",
    "frequent_directions",
    "ginger",
    "ginger_diagonal",
    "ginger_product",
    "nystrom",
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


class Approximation(Protocol):
    r"""The approximation protocol: what every method (:class:`Ginger`, :class:`QNG`, :class:`FrequentDirections`, ...) provides.

    A frozen dataclass of hyper-parameters; its methods are pure functions of
    their arguments. The checked methods validate like the flat functions;
    the engine methods (``fold``, ``fold_precondition``, ``solve``) check
    nothing, take the array namespace first, and complete their sums over the
    parameter axis through ``reduce`` — the front-ends call them inside
    ``jax.jit``, ``shard_map`` or under ``torch.distributed``.
    """

    name: ClassVar[str]
    """Short name of the method (``"ginger"``, ``"ginger-product"``, ``"qng"``)."""
    needs_damping: ClassVar[bool]
    """Whether the query takes a damping γ (False for QNG, whose damping is implicit)."""
    shardable: ClassVar[bool]
    """Whether ``reduce`` may be a collective (the state split by rows across devices)."""
    state_type: ClassVar[type]
    """The NamedTuple class of the states."""
    rank: int
    """The rank τ of the approximation (the number of directions or factors it keeps)."""
    decay: float
    """The EMA decay α ∈ (0, 1) of the curvature it approximates."""

    def with_rank(self, rank: int) -> Approximation:
        """Return a copy with another rank (for blocks with fewer than ``rank + 1`` parameters).

        Parameters
        ----------
        rank : int
            τ ≥ 1.

        Returns
        -------
        Approximation
            The same method and hyper-parameters, with ``rank``.
        """
        ...

    def init(self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None) -> Any:
        """Return the empty state: the curvature 0 (QNG: the identity).

        Parameters
        ----------
        dim : int
            Number of parameters d, ``rank < dim``.
        xp : module, optional
            Array namespace or library module; default NumPy.
        dtype : dtype, optional
            float32 or float64 of that namespace.
        device : device, optional
            Where to allocate the state.

        Returns
        -------
        NamedTuple
            A state of :attr:`state_type`.
        """
        ...

    def update(self, state: Any, d: Array) -> Any:
        """Return the state with the curvature vector ``d`` folded into the EMA (Eq 7).

        Parameters
        ----------
        state : NamedTuple
            The current state.
        d : array, shape (dim,)
            The curvature vector (Eq 8), in the state's dtype (float16/bfloat16 promoted).

        Returns
        -------
        NamedTuple
            The new state; a non-finite ``d`` leaves it unchanged except ``num_nonfinite``.
        """
        ...

    def update_precondition(self, state: Any, d: Array, g: Array, *, damping: Any) -> tuple[Any, Array]:
        """Fold ``d`` in, then precondition ``g`` with the new state, in one fused step where the method has one.

        Parameters
        ----------
        state : NamedTuple
            The current state.
        d, g : array, shape (dim,)
            The curvature vector and the gradient.
        damping : float, 0-d array or None
            γ > 0 (may be traced under ``jax.jit``); ``None`` for QNG.

        Returns
        -------
        tuple
            ``(new_state, y)``, ``y`` the preconditioned ``g`` in ``g``'s dtype.
        """
        ...

    def precondition(self, state: Any, g: Array, *, damping: Any) -> Array:
        """Apply the inverse of the damped curvature to ``g``.

        Parameters
        ----------
        state : NamedTuple
            The state.
        g : array, shape (dim,) or (dim, k)
            Gradient(s), one per column.
        damping : float, 0-d array or None
            γ > 0; ``None`` for QNG.

        Returns
        -------
        array
            ``G̃⁻¹ g``, shaped like ``g``.
        """
        ...

    def operator(self, state: Any, *, damping: Any) -> Any:
        """Return the damped curvature as an operator object (``matvec``, ``solve``, ``dense``).

        Parameters
        ----------
        state : NamedTuple
            The state.
        damping : float, 0-d array or None
            γ > 0; ``None`` for QNG.

        Returns
        -------
        DampedLowRank or FactorProduct
            The operator, sharing the state's arrays.
        """
        ...

    def fold(self, xp: ArrayNamespace, state: Any, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False) -> Any:
        """Unchecked :meth:`update` (the engine): ``d`` must already be in the state's dtype and layout.

        Parameters
        ----------
        xp : namespace
            The state's array namespace.
        state : NamedTuple
            The current state (this device's rows of it when ``reduce`` is a collective).
        d : array, shape (dim,)
            The curvature vector (this device's rows).
        reduce : Reduction
            Completes the sums over the parameter axis.
        donate : bool
            NumPy and PyTorch: write the new basis into the old one's memory.

        Returns
        -------
        NamedTuple
            The new state.
        """
        ...

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: Any,
        d: Array,
        g: Array,
        *,
        damping: Any,
        reduce: Reduction = LOCAL,
        donate: bool = False,
    ) -> tuple[Any, Array]:
        """Unchecked :meth:`update_precondition` (the engine).

        Parameters
        ----------
        xp : namespace
            The state's array namespace.
        state : NamedTuple
            The current state.
        d, g : array, shape (dim,)
            The curvature vector and the gradient, in the state's dtype.
        damping : float, 0-d array or None
            γ > 0; ``None`` for QNG.
        reduce : Reduction
            Completes the sums over the parameter axis.
        donate : bool
            NumPy and PyTorch: write the new basis into the old one's memory.

        Returns
        -------
        tuple
            ``(new_state, y)``.
        """
        ...

    def solve(self, xp: ArrayNamespace, state: Any, g: Array, *, damping: Any, reduce: Reduction = LOCAL) -> Array:
        """Unchecked :meth:`precondition` (the engine).

        Parameters
        ----------
        xp : namespace
            The state's array namespace.
        state : NamedTuple
            The state.
        g : array, shape (dim,) or (dim, k)
            Gradient(s) in the state's dtype.
        damping : float, 0-d array or None
            γ > 0; ``None`` for QNG.
        reduce : Reduction
            Completes the sums over the parameter axis.

        Returns
        -------
        array
            ``G̃⁻¹ g``.
        """
        ...


def _inherit_docstrings(cls: type) -> type:
    """Give each method of ``cls`` without a docstring the one of :class:`Approximation` (the protocol's contract)."""
    for name, value in vars(cls).items():
        base = getattr(Approximation, name, None)
        if callable(value) and getattr(value, "__doc__", None) is None and base is not None:
            value.__doc__ = base.__doc__
    return cls


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class Ginger(Approximation):
    r"""Ginger: the best rank-τ approximation of the EMA, by Brand's update (eigen path).

    Built by :func:`ginger`. States are :class:`GingerState`; the operator is
    :class:`DampedLowRank`. Splits across devices (``reduce`` may be a collective).

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    reorthonormalize_every : int, "auto" or None
        As in :func:`ginger_update`.
    """

    rank: int
    decay: float
    reorthonormalize_every: int | Literal["auto"] | None = "auto"
    name: ClassVar[str] = "ginger"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = True
    state_type: ClassVar[type] = GingerState

    def with_rank(self, rank: int) -> Ginger:
        return dataclasses.replace(self, rank=_check_rank(rank))

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> GingerState:
        return ginger_init(dim, self.rank, xp=xp, dtype=dtype, device=device)

    def update(self, state: GingerState, d: Array) -> GingerState:
        return ginger_update(state, d, decay=self.decay, reorthonormalize_every=self.reorthonormalize_every)

    def update_precondition(self, state: GingerState, d: Array, g: Array, *, damping: Any) -> tuple[GingerState, Array]:
        return ginger_update_precondition(
            state, d, g, decay=self.decay, damping=damping, reorthonormalize_every=self.reorthonormalize_every
        )

    def precondition(self, state: GingerState, g: Array, *, damping: Any) -> Array:
        return ginger_precondition(state, g, damping=damping)

    def operator(self, state: GingerState, *, damping: Any) -> DampedLowRank:
        return DampedLowRank(diagonal=damping, basis=state.basis, eigvals=state.eigvals)

    # -- the unchecked engine: namespace first, sums completed through `reduce` --
    def fold(
        self, xp: ArrayNamespace, state: GingerState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> GingerState:
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

    def fold_precondition_batch(
        self,
        xp: ArrayNamespace,
        states: Sequence[GingerState],
        ds: Sequence[Array],
        gs: Sequence[Array],
        *,
        damping: Any,
        map_small: Callable[[Callable[[Any], Any], Any], Any],
    ) -> list[tuple[GingerState, Array]]:
        """:meth:`fold_precondition` of several local states of this rank and one dtype, with one batched ``eigh``.

        Results equal those of :meth:`fold_precondition` state by state; no
        donation; unchecked, like the other engine methods. Cost: one pass
        over each state's basis as in :meth:`fold_precondition`, plus one
        batched (τ+1)² eigendecomposition for all the states.

        Parameters
        ----------
        xp : array namespace
            The namespace of the states (JAX under ``jax.jit`` in the optax front-end).
        states : sequence of GingerState
            Local (unsharded) states of this object's rank and one dtype.
        ds : sequence of array
            The curvature vectors, one per state, each of its state's dim and dtype.
        gs : sequence of array
            The vectors to precondition, one per state, likewise.
        damping : float or 0-d array
            γ > 0 of the query, shared by all the states.
        map_small : callable
            ``map_small(fn, stacked)`` maps ``fn`` over the leading axis of a
            NamedTuple of stacked small arrays (``jax.vmap`` on JAX).

        Returns
        -------
        list of (GingerState, array)
            For each state, the new state and the preconditioned vector.
        """
        if not states:
            return []
        every = resolve_reorthonormalize_every(xp, states[0].basis.dtype, self.reorthonormalize_every)
        return core_ginger.update_precondition_batch(
            xp, states, ds, gs, decay=self.decay, damping=damping, reorthonormalize_every=every, map_small=map_small
        )

    def solve(
        self, xp: ArrayNamespace, state: GingerState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        return core_ginger.precondition(xp, state, g, damping=damping, reduce=reduce)


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class GingerProduct(Approximation):
    r"""Ginger in product form ``U = W Q``: O(dτ) amortised updates, the same results to working precision.

    Built by :func:`ginger_product`. States are :class:`GingerProductState`;
    the operator forms ``U = WQ`` (one product, O(dim · capacity · rank)). Runs
    on one device: ``shardable`` is False and ``reduce`` must be the local one;
    :meth:`with_rank` resets the capacity to its default.

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    capacity : int or None
        Columns of the buffer for W (see :func:`ginger_product_init`).
    """

    rank: int
    decay: float
    capacity: int | None = None
    name: ClassVar[str] = "ginger-product"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = False
    state_type: ClassVar[type] = GingerProductState

    def with_rank(self, rank: int) -> GingerProduct:
        return dataclasses.replace(self, rank=_check_rank(rank), capacity=None)

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> GingerProductState:
        return ginger_product_init(dim, self.rank, capacity=self.capacity, xp=xp, dtype=dtype, device=device)

    def update(self, state: GingerProductState, d: Array) -> GingerProductState:
        return ginger_product_update(state, d, decay=self.decay)

    def update_precondition(
        self, state: GingerProductState, d: Array, g: Array, *, damping: Any
    ) -> tuple[GingerProductState, Array]:
        return ginger_product_update_precondition(state, d, g, decay=self.decay, damping=damping)

    def precondition(self, state: GingerProductState, g: Array, *, damping: Any) -> Array:
        return ginger_product_precondition(state, g, damping=damping)

    def operator(self, state: GingerProductState, *, damping: Any) -> DampedLowRank:
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
        _local_only(reduce)
        return core_product.update_precondition(xp, state, d, g, decay=self.decay, damping=damping, donate=donate)

    def solve(
        self, xp: ArrayNamespace, state: GingerProductState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        _local_only(reduce)
        return core_product.precondition(xp, state, g, as_scalar(xp, damping, state.columns))


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class QNG(Approximation):
    r"""QNG (He et al., 2022; the paper's §2.2, corrected): a window of τ rank-one factors.

    Built by :func:`qng`. States are :class:`QNGState`; the operator is
    :class:`FactorProduct`. Its damping is implicit (``ÂÂᵀ ⪰ α^k I``): the
    methods take ``damping=None`` and raise ``ValueError`` for anything else.
    ``donate`` has no effect (the window is updated by a branch, not a pass).

    Parameters
    ----------
    rank : int
        τ ≥ 1, the window length.
    decay : float
        α ∈ (0, 1).
    """

    rank: int
    decay: float
    name: ClassVar[str] = "qng"
    needs_damping: ClassVar[bool] = False
    shardable: ClassVar[bool] = True
    state_type: ClassVar[type] = QNGState

    def with_rank(self, rank: int) -> QNG:
        return dataclasses.replace(self, rank=_check_rank(rank))

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> QNGState:
        return qng_init(dim, self.rank, xp=xp, dtype=dtype, device=device)

    def update(self, state: QNGState, d: Array) -> QNGState:
        return qng_update(state, d, decay=self.decay)

    def update_precondition(
        self, state: QNGState, d: Array, g: Array, *, damping: Any = None
    ) -> tuple[QNGState, Array]:
        _no_damping(damping)
        new = qng_update(state, d, decay=self.decay)
        return new, qng_precondition(new, g)

    def precondition(self, state: QNGState, g: Array, *, damping: Any = None) -> Array:
        _no_damping(damping)
        return qng_precondition(state, g)

    def operator(self, state: QNGState, *, damping: Any = None) -> FactorProduct:
        _no_damping(damping)
        check_qng_state(state)
        return FactorProduct(state)

    def fold(
        self, xp: ArrayNamespace, state: QNGState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> QNGState:  # noqa: ARG002
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
        new = core_qng.update(xp, state, d, decay=self.decay, reduce=reduce)
        return new, core_qng.precondition(new, g, reduce=reduce)

    def solve(
        self, xp: ArrayNamespace, state: QNGState, g: Array, *, damping: Any = None, reduce: Reduction = LOCAL
    ) -> Array:  # noqa: ARG002
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
        """Apply ``ÂÂᵀ``. Cost O(dim · rank · k).

        Parameters
        ----------
        v : array, shape (dim,) or (dim, k)
            Vector(s), one per column, in the state's dtype.

        Returns
        -------
        array
            ``ÂÂᵀ v``, shaped like ``v``.
        """
        check_qng_state(self.state)
        dim = self.state.factors.shape[1]
        check_like(v, "v", self.state.factors, shapes=((dim,), (dim, -1)))
        half = core_qng.factor_product(self.state, v, inverse=False, transpose=True)
        return core_qng.factor_product(self.state, half, inverse=False, transpose=False)

    def solve(self, g: Array) -> Array:
        """Apply ``(ÂÂᵀ)⁻¹ = Â⁻ᵀÂ⁻¹``. Cost O(dim · rank · k).

        Parameters
        ----------
        g : array, shape (dim,) or (dim, k)
            Right-hand side(s), one per column.

        Returns
        -------
        array
            ``(ÂÂᵀ)⁻¹ g``, shaped like ``g``.
        """
        return qng_precondition(self.state, g)

    def dense(self) -> Array:
        """Materialise ``ÂÂᵀ`` (O(dim²) memory: for tests and small problems).

        Returns
        -------
        array, shape (dim, dim)
            ``ÂÂᵀ``.
        """
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
        ``init``, ``update``, ``update_precondition``, ``precondition``, ``operator``.
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
        ``init``, ``update``, ``update_precondition``, ``precondition``, ``operator``.
    """
    check_decay(decay)
    return QNG(rank=_check_rank(rank), decay=float(decay))


# =========================================================================== the approximation family


class DiagonalState(NamedTuple):
    """State of :func:`diagonal`: the exact diagonal of the EMA. A NamedTuple of arrays (a JAX pytree).

    Parameters
    ----------
    diagonal, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    diagonal: Array
    """The diagonal m of the exact EMA, shape (dim,): ``m_t = α m_{t−1} + (1−α) d_t∘d_t``."""
    step: Array
    """0-d int32: number of accepted updates."""
    num_nonfinite: Array
    """0-d int32: number of updates rejected as non-finite (the state is then unchanged)."""


class GingerDiagonalState(NamedTuple):
    """State of :func:`ginger_diagonal`: Ginger's fields (see :class:`lowrank_ggn.GingerState`) and the exact diagonal.

    Parameters
    ----------
    basis, eigvals, discarded, escaped, diagonal, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    basis: Array
    """U, shape (dim, rank), orthonormal columns."""
    eigvals: Array
    """The eigenvalues σ, shape (rank,), non-negative, sorted descending."""
    discarded: Array
    """0-d: trace of the curvature dropped, EMA-weighted."""
    escaped: Array
    """0-d: the certificate ρ, with ``0 ⪯ M − U diag(σ) Uᵀ ⪯ ρI``."""
    diagonal: Array
    """The diagonal m of the exact EMA, shape (dim,)."""
    step: Array
    """0-d int32: number of accepted updates."""
    num_nonfinite: Array
    """0-d int32: number of rejected (non-finite) updates."""


class NystromState(NamedTuple):
    """State of :func:`nystrom`: the test matrix and the exact sketch ``Y = M Ω``.

    Parameters
    ----------
    test_matrix, sketch, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    test_matrix: Array
    """The test matrix Ω, shape (dim, sketch_size): fixed Gaussian, drawn once from the seed."""
    sketch: Array
    """The sketch Y = M Ω, shape (dim, sketch_size)."""
    step: Array
    """0-d int32: number of accepted updates."""
    num_nonfinite: Array
    """0-d int32: number of rejected (non-finite) updates."""


def _empty_counters(ns: Any, device: Any) -> tuple[Array, Array]:
    return ns.zeros((), dtype=ns.int32, device=device), ns.zeros((), dtype=ns.int32, device=device)


def _namespace_dtype(xp: Any, dtype: Any) -> tuple[Any, Any]:
    ns = resolve_namespace(xp)
    return ns, canonical_float_dtype(ns, dtype)


def _check_state(state: Any, cls: type, vector: str) -> Any:
    if not has_fields(state, cls._fields):  # type: ignore[attr-defined]
        msg = f"state must be a {cls.__name__}, got {type(state).__name__}"
        raise TypeError(msg)
    like = getattr(state, vector)
    if not hasattr(like, "ndim") or like.ndim not in (1, 2):
        msg = f"state.{vector} must be an array"
        raise TypeError(msg)
    return check_like(like, f"state.{vector}", like, shapes=(tuple(like.shape),))


def _vector(state_vec: Array, x: Any, name: str, *, batch: bool = False) -> tuple[Any, Array]:
    dim = state_vec.shape[0]
    xp = check_like(x, name, state_vec, shapes=((dim,), (dim, -1)) if batch else ((dim,),), promote=True)
    return xp, cast_like(xp, x, state_vec)


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class FrequentDirections(Approximation):
    r"""Frequent Directions in EMA form (Liberty 2013; Ghashami et al. 2016; Sketchy, Feinberg et al. 2023).

    Built by :func:`frequent_directions`. Its state is a
    :class:`~lowrank_ggn.GingerState`: the same update as Ginger (two passes,
    the fused query, sharding and ``torch.distributed``), except that the
    eigenvalue ``δ`` that Ginger drops is subtracted from the τ kept ones;
    ``state.escaped`` is ρ with ``0 ⪯ M − M̃ ⪯ ρI`` (tight for FD) and
    ``state.discarded`` the trace dropped. With ``add_escaped=True`` the
    queries use the damping ``γ + ρ`` (Sketchy's choice), whose operator
    dominates ``γI + M``.

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    reorthonormalize_every : int, "auto" or None
        As in :func:`ginger_update`.
    add_escaped : bool
        Query with the damping ``γ + ρ``.
    """

    rank: int
    decay: float
    reorthonormalize_every: int | Literal["auto"] | None = "auto"
    add_escaped: bool = False
    name: ClassVar[str] = "frequent-directions"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = True
    state_type: ClassVar[type] = GingerState

    def with_rank(self, rank: int) -> FrequentDirections:
        return dataclasses.replace(self, rank=_check_rank(rank))

    def _gamma(self, state: GingerState, damping: Any) -> Any:
        return damping + state.escaped if self.add_escaped else damping

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> GingerState:
        return ginger_init(dim, self.rank, xp=xp, dtype=dtype, device=device)

    @floating_point_errors_ignored()
    def update(self, state: GingerState, d: Array) -> GingerState:
        xp = check_ginger_state(state)
        xp, d = _vector(state.basis, d, "d")
        check_decay(self.decay, like=state.basis)
        return self.fold(xp, state, d)

    @floating_point_errors_ignored()
    def update_precondition(self, state: GingerState, d: Array, g: Array, *, damping: Any) -> tuple[GingerState, Array]:
        xp = check_ginger_state(state)
        _, d = _vector(state.basis, d, "d")
        _, g_cast = _vector(state.basis, g, "g")
        check_decay(self.decay, like=state.basis)
        check_damping(damping, like=state.basis)
        new, y = self.fold_precondition(xp, state, d, g_cast, damping=damping)
        return new, cast_like(xp, y, g)

    def precondition(self, state: GingerState, g: Array, *, damping: Any) -> Array:
        return self.operator(state, damping=damping).solve(g)

    def operator(self, state: GingerState, *, damping: Any) -> DampedLowRank:
        check_ginger_state(state)
        check_damping(damping, like=state.basis)
        return DampedLowRank(diagonal=self._gamma(state, damping), basis=state.basis, eigvals=state.eigvals)

    def fold(
        self, xp: ArrayNamespace, state: GingerState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> GingerState:
        every = resolve_reorthonormalize_every(xp, state.basis.dtype, self.reorthonormalize_every)
        return core_fd.update(xp, state, d, decay=self.decay, reorthonormalize_every=every, reduce=reduce, donate=donate)

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
        # With add_escaped the query takes ρ of the new state, so it is evaluated after the update.
        every = resolve_reorthonormalize_every(xp, state.basis.dtype, self.reorthonormalize_every)
        if self.add_escaped:
            new = core_fd.update(
                xp, state, d, decay=self.decay, reorthonormalize_every=every, reduce=reduce, donate=donate
            )
            return new, self.solve(xp, new, g, damping=damping, reduce=reduce)
        return core_fd.update_precondition(
            xp, state, d, g, decay=self.decay, damping=damping, reorthonormalize_every=every, reduce=reduce, donate=donate
        )

    def solve(
        self, xp: ArrayNamespace, state: GingerState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        return core_ginger.precondition(xp, state, g, damping=self._gamma(state, damping), reduce=reduce)


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class Diagonal(Approximation):
    r"""The exact diagonal of the EMA, ``m ← αm + (1−α) d∘d``; operator ``diag(γ + m)``. O(dim) memory and time.

    Built by :func:`diagonal`. ``rank`` is nominal (1; the state has no basis)
    and ``with_rank`` returns the object unchanged.

    Parameters
    ----------
    decay : float
        α ∈ (0, 1).
    rank : int
        Nominal (1).
    """

    decay: float
    rank: int = 1
    name: ClassVar[str] = "diagonal"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = False
    state_type: ClassVar[type] = DiagonalState

    def with_rank(self, rank: int) -> Diagonal:  # noqa: ARG002
        return self  # the rank is nominal

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> DiagonalState:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            msg = f"dim must be a positive integer, got {dim!r}"
            raise ValueError(msg) if isinstance(dim, int) and not isinstance(dim, bool) else TypeError(msg)
        ns, dt = _namespace_dtype(xp, dtype)
        return DiagonalState(ns.zeros((dim,), dtype=dt, device=device), *_empty_counters(ns, device))

    @floating_point_errors_ignored()
    def update(self, state: DiagonalState, d: Array) -> DiagonalState:
        _check_state(state, DiagonalState, "diagonal")
        xp, d = _vector(state.diagonal, d, "d")
        check_decay(self.decay, like=state.diagonal)
        return self.fold(xp, state, d)

    @floating_point_errors_ignored()
    def update_precondition(
        self, state: DiagonalState, d: Array, g: Array, *, damping: Any
    ) -> tuple[DiagonalState, Array]:
        new = self.update(state, d)
        return new, self.precondition(new, g, damping=damping)

    def precondition(self, state: DiagonalState, g: Array, *, damping: Any) -> Array:
        _check_state(state, DiagonalState, "diagonal")
        xp, g_cast = _vector(state.diagonal, g, "g", batch=True)
        check_damping(damping, like=state.diagonal)
        return cast_like(xp, self.solve(xp, state, g_cast, damping=damping), g)

    def operator(self, state: DiagonalState, *, damping: Any) -> DampedLowRank:
        xp = _check_state(state, DiagonalState, "diagonal")
        check_damping(damping, like=state.diagonal)
        m = state.diagonal
        dev = m.device if hasattr(m, "device") else None
        basis = xp.zeros((m.shape[0], 0), dtype=m.dtype, device=dev)
        return DampedLowRank(diagonal=as_scalar(xp, damping, m) + m, basis=basis, eigvals=basis[0, :])

    def fold(
        self, xp: ArrayNamespace, state: DiagonalState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> DiagonalState:
        return core_diagonal.update(xp, state, d, decay=self.decay, reduce=reduce)

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: DiagonalState,
        d: Array,
        g: Array,
        *,
        damping: Any,
        reduce: Reduction = LOCAL,
        donate: bool = False,  # noqa: ARG002
    ) -> tuple[DiagonalState, Array]:
        new = self.fold(xp, state, d, reduce=reduce)
        return new, self.solve(xp, new, g, damping=damping, reduce=reduce)

    def solve(
        self, xp: ArrayNamespace, state: DiagonalState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        d = as_scalar(xp, damping, state.diagonal) + state.diagonal
        return g / (d[:, None] if g.ndim == 2 else d)


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class GingerDiagonal(Approximation):
    r"""Ginger plus the exact diagonal of the EMA (SLANG's diagonal correction, Mishkin et al. 2018).

    Built by :func:`ginger_diagonal`. Operator ``D + U diag(σ) Uᵀ`` with
    ``D = γ + max(m − diag(U diag(σ) Uᵀ), 0)``: its diagonal is ``γ + diag(M)``.
    O(dim) more memory than Ginger; each query factorises ``D^{-1/2}UΣ^{1/2}``
    (O(dim · rank²): build the operator once to reuse it). One device
    (``shardable`` is False).

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    reorthonormalize_every : int, "auto" or None
        As in :func:`ginger_update`.
    """

    rank: int
    decay: float
    reorthonormalize_every: int | Literal["auto"] | None = "auto"
    name: ClassVar[str] = "ginger-diagonal"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = False
    state_type: ClassVar[type] = GingerDiagonalState

    def with_rank(self, rank: int) -> GingerDiagonal:
        return dataclasses.replace(self, rank=_check_rank(rank))

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> GingerDiagonalState:
        g = ginger_init(dim, self.rank, xp=xp, dtype=dtype, device=device)
        ns = resolve_namespace(xp)
        m = ns.zeros((dim,), dtype=g.basis.dtype, device=device)
        return GingerDiagonalState(g.basis, g.eigvals, g.discarded, g.escaped, m, g.step, g.num_nonfinite)

    def _check(self, state: Any) -> ArrayNamespace:
        if not has_fields(state, GingerDiagonalState._fields):
            msg = f"state must be a GingerDiagonalState, got {type(state).__name__}"
            raise TypeError(msg)
        xp = check_ginger_state(state)
        check_like(state.diagonal, "state.diagonal", state.basis, shapes=((state.basis.shape[0],),))
        return xp

    @floating_point_errors_ignored()
    def update(self, state: GingerDiagonalState, d: Array) -> GingerDiagonalState:
        xp = self._check(state)
        _, d = _vector(state.basis, d, "d")
        check_decay(self.decay, like=state.basis)
        return self.fold(xp, state, d)

    @floating_point_errors_ignored()
    def update_precondition(
        self, state: GingerDiagonalState, d: Array, g: Array, *, damping: Any
    ) -> tuple[GingerDiagonalState, Array]:
        new = self.update(state, d)
        return new, self.precondition(new, g, damping=damping)

    def precondition(self, state: GingerDiagonalState, g: Array, *, damping: Any) -> Array:
        return self.operator(state, damping=damping).solve(g)

    def operator(self, state: GingerDiagonalState, *, damping: Any) -> DampedLowRank:
        xp = self._check(state)
        check_damping(damping, like=state.basis)
        gamma = as_scalar(xp, damping, state.basis)
        return DampedLowRank(diagonal=core_diagonal.correction(xp, state, gamma), basis=state.basis, eigvals=state.eigvals)

    def fold(
        self,
        xp: ArrayNamespace,
        state: GingerDiagonalState,
        d: Array,
        *,
        reduce: Reduction = LOCAL,
        donate: bool = False,
    ) -> GingerDiagonalState:
        every = resolve_reorthonormalize_every(xp, state.basis.dtype, self.reorthonormalize_every)
        return core_diagonal.ginger_update(
            xp, state, d, decay=self.decay, reorthonormalize_every=every, reduce=reduce, donate=donate
        )

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: GingerDiagonalState,
        d: Array,
        g: Array,
        *,
        damping: Any,
        reduce: Reduction = LOCAL,
        donate: bool = False,
    ) -> tuple[GingerDiagonalState, Array]:
        _local_only(reduce)
        new = self.fold(xp, state, d, donate=donate)
        return new, self.solve(xp, new, g, damping=damping)

    def solve(
        self, xp: ArrayNamespace, state: GingerDiagonalState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        _local_only(reduce)
        diag = core_diagonal.correction(xp, state, as_scalar(xp, damping, state.basis))
        return core_operator.diag_solve(xp, core_operator.whiten(xp, diag, state.basis, state.eigvals), g)


@_inherit_docstrings
@dataclasses.dataclass(frozen=True)
class Nystrom(Approximation):
    r"""Streaming randomized Nyström approximation (Tropp, Yurtsever, Udell, Cevher 2017).

    Built by :func:`nystrom`. Updates cost O(dim · s); the rank-τ eigenpairs
    are reconstructed (O(dim · s²)) when :meth:`operator` is called — build the
    operator once per step and reuse it; :meth:`precondition` and the fused
    step reconstruct at every call. ``M̂ ⪯ M`` (to the shift ν, rounding level)
    and ``M̂ = M`` while ``rank M ≤ τ ≤ s``. One device (``shardable`` is False).

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    sketch_size : int or None
        s ≥ τ, the columns of the test matrix Ω.
    seed : int
        Seed of Ω.
    """

    rank: int
    decay: float
    sketch_size: int | None = None
    seed: int = 0
    name: ClassVar[str] = "nystrom"
    needs_damping: ClassVar[bool] = True
    shardable: ClassVar[bool] = False
    state_type: ClassVar[type] = NystromState

    def with_rank(self, rank: int) -> Nystrom:
        return dataclasses.replace(self, rank=_check_rank(rank), sketch_size=None)

    def init(
        self, dim: int, *, xp: Any | None = None, dtype: DType | None = None, device: Device | None = None
    ) -> NystromState:
        dim, rank = check_dim_rank(dim, self.rank)
        size = min(2 * rank, dim) if self.sketch_size is None else self.sketch_size
        if size > dim:
            msg = f"sketch_size must be at most dim={dim}, got {size}"
            raise ValueError(msg)
        ns, dt = _namespace_dtype(xp, dtype)
        host = np.random.default_rng(self.seed).standard_normal((dim, size))
        omega = ns.asarray(host, dtype=dt, device=device)
        return NystromState(omega, ns.zeros((dim, size), dtype=dt, device=device), *_empty_counters(ns, device))

    def _check(self, state: Any) -> ArrayNamespace:
        xp = _check_state(state, NystromState, "sketch")
        check_like(state.test_matrix, "state.test_matrix", state.sketch, shapes=(tuple(state.sketch.shape),))
        return xp

    @floating_point_errors_ignored()
    def update(self, state: NystromState, d: Array) -> NystromState:
        self._check(state)
        xp, d = _vector(state.sketch, d, "d")
        check_decay(self.decay, like=state.sketch)
        return self.fold(xp, state, d)

    @floating_point_errors_ignored()
    def update_precondition(self, state: NystromState, d: Array, g: Array, *, damping: Any) -> tuple[NystromState, Array]:
        new = self.update(state, d)
        return new, self.precondition(new, g, damping=damping)

    def precondition(self, state: NystromState, g: Array, *, damping: Any) -> Array:
        return self.operator(state, damping=damping).solve(g)

    def operator(self, state: NystromState, *, damping: Any) -> DampedLowRank:
        xp = self._check(state)
        check_damping(damping, like=state.sketch)
        basis, eigvals = core_nystrom.reconstruct(xp, state, self.rank)
        return DampedLowRank(diagonal=damping, basis=basis, eigvals=eigvals)

    def fold(
        self, xp: ArrayNamespace, state: NystromState, d: Array, *, reduce: Reduction = LOCAL, donate: bool = False
    ) -> NystromState:
        _local_only(reduce)
        return core_nystrom.update(xp, state, d, decay=self.decay)

    def fold_precondition(
        self,
        xp: ArrayNamespace,
        state: NystromState,
        d: Array,
        g: Array,
        *,
        damping: Any,
        reduce: Reduction = LOCAL,
        donate: bool = False,  # noqa: ARG002
    ) -> tuple[NystromState, Array]:
        new = self.fold(xp, state, d, reduce=reduce)
        return new, self.solve(xp, new, g, damping=damping, reduce=reduce)

    def solve(
        self, xp: ArrayNamespace, state: NystromState, g: Array, *, damping: Any, reduce: Reduction = LOCAL
    ) -> Array:
        _local_only(reduce)
        basis, eigvals = core_nystrom.reconstruct(xp, state, self.rank)
        return core_operator.solve(xp, basis, eigvals, g, as_scalar(xp, damping, basis))


def frequent_directions(
    *, rank: int, decay: float, reorthonormalize_every: int | Literal["auto"] | None = "auto", add_escaped: bool = False
) -> FrequentDirections:
    r"""Frequent Directions (EMA form) in the approximation protocol.

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update`.
    add_escaped : bool, default False
        Use ``γ + ρ`` (``state.escaped``) as the damping of the queries (Sketchy).

    Returns
    -------
    FrequentDirections
        An object of the approximation protocol (``init``, ``update``, ``update_precondition``, ...).

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank_ggn as lg
    >>> fd = lg.frequent_directions(rank=2, decay=0.9)
    >>> state = fd.init(20)
    >>> for d in np.random.default_rng(0).standard_normal((10, 20)):
    ...     state = fd.update(state, d)
    >>> bool(state.escaped > 0)
    True
    """
    check_decay(decay)
    if not isinstance(add_escaped, bool):
        msg = f"add_escaped must be a bool, got {type(add_escaped).__name__}"
        raise TypeError(msg)
    return FrequentDirections(
        rank=_check_rank(rank),
        decay=float(decay),
        reorthonormalize_every=check_reorthonormalize_every(reorthonormalize_every),
        add_escaped=add_escaped,
    )


def diagonal(*, decay: float) -> Diagonal:
    """The exact diagonal of the EMA in the approximation protocol (operator ``diag(γ + m)``).

    Parameters
    ----------
    decay : float
        α ∈ (0, 1).

    Returns
    -------
    Diagonal
        An object of the approximation protocol (``init``, ``update``, ``update_precondition``, ...).
    """
    check_decay(decay)
    return Diagonal(decay=float(decay))


def ginger_diagonal(
    *, rank: int, decay: float, reorthonormalize_every: int | Literal["auto"] | None = "auto"
) -> GingerDiagonal:
    """Ginger plus the exact diagonal of the EMA (SLANG) in the approximation protocol.

    Parameters
    ----------
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update`.

    Returns
    -------
    GingerDiagonal
        An object of the approximation protocol (``init``, ``update``, ``update_precondition``, ...).
    """
    check_decay(decay)
    return GingerDiagonal(
        rank=_check_rank(rank),
        decay=float(decay),
        reorthonormalize_every=check_reorthonormalize_every(reorthonormalize_every),
    )


def nystrom(*, rank: int, decay: float, sketch_size: int | None = None, seed: int = 0) -> Nystrom:
    """The streaming randomized Nyström approximation in the approximation protocol.

    Parameters
    ----------
    rank : int
        τ ≥ 1, the rank of the reconstruction.
    decay : float
        α ∈ (0, 1).
    sketch_size : int, optional
        s ≥ τ, the columns of the test matrix Ω (default ``min(2τ, dim)``);
        the state holds two dim × s arrays.
    seed : int, default 0
        Seed of Ω (``numpy.random.default_rng``).

    Returns
    -------
    Nystrom
        An object of the approximation protocol (``init``, ``update``, ``update_precondition``, ...).
    """
    check_decay(decay)
    rank = _check_rank(rank)
    if sketch_size is not None and (
        isinstance(sketch_size, bool) or not isinstance(sketch_size, int) or sketch_size < rank
    ):
        msg = f"sketch_size must be an integer at least rank={rank}, got {sketch_size!r}"
        raise ValueError(msg)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        msg = f"seed must be a non-negative integer, got {seed!r}"
        raise ValueError(msg)
    return Nystrom(rank=rank, decay=float(decay), sketch_size=sketch_size, seed=seed)
