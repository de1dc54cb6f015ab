r"""Ginger and QNG with the parameter axis split across ``torch.distributed`` processes.

Each process (rank) of a process group holds a contiguous block of the
``dim`` parameters — a slice of the flattened parameter vector, as under fully
sharded data parallelism — and the matching rows of the basis ``U`` (QNG: the
matching columns of the factors). The functions here take and return those
local blocks. Every step of Ginger and QNG is row-local for the big arrays,
except for the reductions over ``dim`` — ``Uᵀv``, ``‖v‖``, ``qᵀv``,
``all(isfinite(d))`` — which each rank computes on its rows and completes with
one ``torch.distributed.all_reduce`` of at most τ numbers (τ² for
re-orthonormalisation):

.. math:: U^\top v = \sum_{k} U_k^\top v_k .

The small problems (the (τ+1)×(τ+1) eigenproblem of the update) are then
solved on every rank from identical inputs, so the replicated fields of the
state (``eigvals``, the counters, QNG's ``betas``) stay identical across ranks,
and a rank stores ``dim_k·τ`` numbers of ``U``. The algorithm is the one of
:func:`lowrank_ggn.ginger_update` and friends, with the same numerical
safeguards; the concatenated blocks equal the single-process result to
rounding.

All ranks of the group must call each function together (they are collective
operations), with the same ``decay``/``damping`` and their own blocks; the
blocks may have different lengths. The state's tensors must live where the
process group's backend can communicate them (CPU for ``gloo``, CUDA for
``nccl``).

.. code-block:: python

    import torch.distributed as dist
    import lowrank_ggn.distributed as lgd

    dist.init_process_group("nccl")  # one process per GPU
    part = lgd.local_slice(dim)  # this rank's block of the parameters
    state = lgd.ginger_init(part.stop - part.start, 16, device="cuda")
    state = lgd.ginger_update(state, d[part], decay=0.99)
    step = lgd.ginger_precondition(state, g[part], damping=1e-3)
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import torch
import torch.distributed as dist

from lowrank_ggn._core import ginger as core_ginger
from lowrank_ggn._core import operator as core_operator
from lowrank_ggn._core import qng as core_qng
from lowrank_ggn._core.aliases import Array, Device, DType
from lowrank_ggn._core.checks import (
    check_approximation,
    check_damping,
    check_decay,
    check_dim_rank,
    check_ginger_state,
    check_like,
    check_qng_state,
)
from lowrank_ggn._core.operator import as_scalar
from lowrank_ggn._core.options import DEFAULT_REORTHONORMALIZE_EVERY, resolve_reorthonormalize_every
from lowrank_ggn._core.reduction import AllReduce
from lowrank_ggn._ginger import GingerState
from lowrank_ggn._qng import QNGState
from lowrank_ggn.backends import canonical_float_dtype, namespace_from_module

__all__ = [
    "ginger_init",
    "ginger_precondition",
    "ginger_reorthonormalize",
    "ginger_update",
    "local_slice",
    "qng_init",
    "qng_precondition",
    "qng_update",
    "update_precondition",
]

Group = Any  # torch.distributed.ProcessGroup or None (the default group)


def _all_reduce(group: Group) -> AllReduce:
    """Reductions completed by ``torch.distributed.all_reduce`` over ``group``."""

    def total(x: Array) -> Array:
        with torch.no_grad():
            y = x.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
            dist.all_reduce(y, op=dist.ReduceOp.SUM, group=group)
        return y

    def all_true(x: Array) -> Array:
        with torch.no_grad():
            y = x.to(torch.int32)
            dist.all_reduce(y, op=dist.ReduceOp.MIN, group=group)
        return y.to(torch.bool)

    def largest(x: Array) -> Array:
        with torch.no_grad():
            y = x.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(y, op=dist.ReduceOp.MAX, group=group)
        return y

    return AllReduce(total, all_true, largest)


def _check_torch(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        msg = f"{name} must be a torch.Tensor, got {type(x).__name__}"
        raise TypeError(msg)


def _check_initialized() -> None:
    if not dist.is_available() or not dist.is_initialized():
        msg = "torch.distributed is not initialised: call torch.distributed.init_process_group first"
        raise RuntimeError(msg)


def _check_local_dim(local_dim: Any) -> int:
    if isinstance(local_dim, bool) or not isinstance(local_dim, numbers.Integral):
        msg = f"local_dim must be an integer, got {type(local_dim).__name__}"
        raise TypeError(msg)
    if local_dim < 1:
        msg = f"local_dim must be at least 1, got {local_dim}"
        raise ValueError(msg)
    return int(local_dim)


def local_slice(dim: int, *, group: Group = None) -> slice:
    """Return this rank's block of an even split of ``range(dim)`` into contiguous blocks.

    The first ``dim mod n`` ranks get one element more than the others
    (``n`` is the size of the group). Any other contiguous split works with
    the functions of this module as well, as long as the blocks are in rank
    order.

    Parameters
    ----------
    dim : int
        Number of parameters, at least the size of the group.
    group : ProcessGroup, optional
        Default: the default process group.

    Returns
    -------
    slice
        ``slice(start, stop)`` of this rank.

    Raises
    ------
    ValueError
        If ``dim`` is smaller than the size of the group.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    _check_initialized()
    n, k = dist.get_world_size(group), dist.get_rank(group)
    dim = _check_local_dim(dim)
    if dim < n:
        msg = f"dim ({dim}) must be at least the number of ranks ({n})"
        raise ValueError(msg)
    base, extra = divmod(dim, n)
    start = k * base + min(k, extra)
    return slice(start, start + base + (k < extra))


def _layout(local_dim: int, group: Group, device: Device) -> tuple[int, int]:
    """Return (offset of this rank's block, total dim): one all-gather of the block lengths."""
    n, k = dist.get_world_size(group), dist.get_rank(group)
    mine = torch.tensor([local_dim], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(n)]
    dist.all_gather(sizes, mine, group=group)
    lengths = [int(s.item()) for s in sizes]
    return sum(lengths[:k]), sum(lengths)


def ginger_init(
    local_dim: int,
    rank: int,
    *,
    group: Group = None,
    dtype: DType | None = None,
    device: Device | None = None,
) -> GingerState:
    """Create this rank's block of an empty Ginger state (collective).

    The blocks of all ranks, concatenated in rank order, are the state of
    :func:`lowrank_ggn.ginger_init` for ``dim = Σ local_dim`` (the first
    ``rank`` columns of the identity, σ = 0). One all-gather of the block
    lengths finds this rank's offset.

    Parameters
    ----------
    local_dim : int
        Number of parameters held by this rank (the blocks may differ in length).
    rank : int
        τ, with ``1 ≤ rank < dim``.
    group : ProcessGroup, optional
        Default: the default process group.
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``. Default: PyTorch's default dtype.
    device : torch.device or str, optional
        Where to allocate the block: where the group's backend communicates.

    Returns
    -------
    GingerState
        ``basis`` of shape ``(local_dim, rank)``; the other fields replicated.

    Raises
    ------
    ValueError
        If ``local_dim < 1`` or ``rank`` is not in ``[1, dim)``.
    TypeError
        If ``local_dim``/``rank`` are not integers or ``dtype`` is not float32/float64.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    _check_initialized()
    local_dim = _check_local_dim(local_dim)
    xp = namespace_from_module(torch)
    dt = canonical_float_dtype(xp, dtype)
    offset, dim = _layout(local_dim, group, device)
    _, rank = check_dim_rank(dim, rank)
    rows = xp.arange(offset, offset + local_dim, device=device)
    cols = xp.arange(rank, device=device)
    return GingerState(
        basis=xp.astype(rows[:, None] == cols[None, :], dt),
        eigvals=xp.zeros((rank,), dtype=dt, device=device),
        discarded=xp.zeros((), dtype=dt, device=device),
        escaped=xp.zeros((), dtype=dt, device=device),
        step=xp.zeros((), dtype=xp.int32, device=device),
        num_nonfinite=xp.zeros((), dtype=xp.int32, device=device),
    )


def _check_ginger(state: GingerState) -> Any:
    xp = check_ginger_state(state)
    _check_torch(state.basis, "state.basis")
    return xp


def ginger_update(
    state: GingerState,
    d: Array,
    *,
    decay: Any,
    group: Group = None,
    reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
) -> GingerState:
    r"""Fold this rank's block of a curvature vector into the distributed state (collective).

    The eigen path of :func:`lowrank_ggn.ginger_update`: the best rank-τ
    approximation of :math:`\alpha U\operatorname{diag}(\sigma)U^\top + (1-\alpha) d d^\top`,
    with ``U`` and ``d`` split into row blocks. Three to five all-reduces of at
    most τ+1 numbers each; the rotation of ``U`` is local.

    Parameters
    ----------
    state : GingerState
        This rank's block (``basis`` of shape ``(local_dim, rank)``).
    d : torch.Tensor, shape (local_dim,)
        This rank's block of the curvature vector (Eq 8).
    decay : float or 0-d tensor
        α ∈ (0, 1), the same on every rank.
    group : ProcessGroup, optional
        Default: the default process group.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update` (here from the Gram matrix
        ``UᵀU``, one all-reduce of τ×τ numbers).

    Returns
    -------
    GingerState
        This rank's block of the updated state. A non-finite entry of ``d``
        on any rank leaves the state unchanged on every rank, except
        ``num_nonfinite``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``reorthonormalize_every < 1``, or ``d`` has the
        wrong shape or device.
    TypeError
        If ``d`` is not a real floating tensor of the state's dtype.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    xp = _check_ginger(state)
    basis = state.basis
    check_like(d, "d", basis, shapes=((basis.shape[0],),))
    check_decay(decay, like=basis)
    every = resolve_reorthonormalize_every(xp, basis.dtype, reorthonormalize_every)
    _check_initialized()
    return core_ginger.update(
        xp,
        state,
        d,
        decay=decay,
        reorthonormalize_every=every,
        reduce=_all_reduce(group),
    )


def ginger_precondition(state: GingerState, g: Array, *, damping: Any, group: Group = None) -> Array:
    r"""Apply the inverse of the damped curvature to this rank's block of ``g`` (collective).

    .. math::
       (\gamma I + U\operatorname{diag}(\sigma)U^\top)^{-1} g
       = U\,\frac{c}{\gamma + \sigma} + \frac{g - U c}{\gamma},
       \qquad c = \sum_k U_k^\top g_k ,

    one all-reduce of ``c`` (τ numbers per column of ``g``).

    Parameters
    ----------
    state : GingerState
        This rank's block.
    g : torch.Tensor, shape (local_dim,) or (local_dim, k)
        This rank's block of the gradient(s).
    damping : float or 0-d tensor
        γ > 0, the same on every rank.
    group : ProcessGroup, optional
        Default: the default process group.

    Returns
    -------
    torch.Tensor, same shape as ``g``
        This rank's block of ``(γI + U diag(σ) Uᵀ)⁻¹ g``.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite, or ``g`` has the wrong shape or device.
    TypeError
        If ``g`` is not a real floating tensor of the state's dtype.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    xp = _check_ginger(state)
    basis = state.basis
    check_like(g, "g", basis, shapes=((basis.shape[0],), (basis.shape[0], -1)))
    check_damping(damping)
    _check_initialized()
    return core_operator.solve(xp, basis, state.eigvals, g, as_scalar(xp, damping, basis), reduce=_all_reduce(group))


def ginger_reorthonormalize(state: GingerState, *, group: Group = None) -> GingerState:
    r"""Re-orthonormalise the distributed basis without changing the represented matrix (collective).

    With ``G = Σ_k U_kᵀU_k = Z diag(g) Zᵀ`` (one all-reduce of τ² numbers),
    ``U' = U (G^{-1/2} W)`` and ``σ' = μ``, where
    ``G^{1/2} diag(σ) G^{1/2} = W diag(μ) Wᵀ``; see
    :func:`lowrank_ggn.sharding.ginger_reorthonormalize`.

    Parameters
    ----------
    state : GingerState
        This rank's block.
    group : ProcessGroup, optional
        Default: the default process group.

    Returns
    -------
    GingerState
        This rank's block; same ``step``, ``discarded``, ``escaped`` and ``num_nonfinite``.
    """
    xp = _check_ginger(state)
    _check_initialized()
    return core_ginger.reorthonormalize(xp, state, _all_reduce(group))


def qng_init(
    local_dim: int,
    rank: int,
    *,
    group: Group = None,
    dtype: DType | None = None,
    device: Device | None = None,
) -> QNGState:
    """Create this rank's block of a QNG state with an empty window (collective).

    Parameters
    ----------
    local_dim : int
        Number of parameters held by this rank.
    rank : int
        Window length τ, with ``1 ≤ rank < dim``.
    group : ProcessGroup, optional
        Default: the default process group.
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``. Default: PyTorch's default dtype.
    device : torch.device or str, optional
        Where to allocate the block.

    Returns
    -------
    QNGState
        ``factors`` of shape ``(rank, local_dim)``; the other fields replicated.

    Raises
    ------
    ValueError
        If ``local_dim < 1`` or ``rank`` is not in ``[1, dim)``.
    TypeError
        If ``local_dim``/``rank`` are not integers or ``dtype`` is not float32/float64.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    _check_initialized()
    local_dim = _check_local_dim(local_dim)
    xp = namespace_from_module(torch)
    dt = canonical_float_dtype(xp, dtype)
    _, dim = _layout(local_dim, group, device)
    _, rank = check_dim_rank(dim, rank)
    return QNGState(
        factors=xp.zeros((rank, local_dim), dtype=dt, device=device),
        betas=xp.zeros((rank,), dtype=dt, device=device),
        scales=xp.ones((rank,), dtype=dt, device=device),
        sqnorms=xp.zeros((rank,), dtype=dt, device=device),
        step=xp.zeros((), dtype=xp.int32, device=device),
        num_nonfinite=xp.zeros((), dtype=xp.int32, device=device),
    )


def _check_qng(state: QNGState) -> Any:
    xp = check_qng_state(state)
    _check_torch(state.factors, "state.factors")
    return xp


def qng_update(state: QNGState, d: Array, *, decay: Any, group: Group = None) -> QNGState:
    r"""Append the factor of a new curvature vector to the distributed QNG state (collective).

    As :func:`lowrank_ggn.qng_update`, with ``q = Â⁻¹ d`` computed block-wise:
    one all-reduce of a scalar per factor, one for ``‖q‖²``.

    Parameters
    ----------
    state : QNGState
        This rank's block (``factors`` of shape ``(rank, local_dim)``).
    d : torch.Tensor, shape (local_dim,)
        This rank's block of the curvature vector (Eq 8).
    decay : float or 0-d tensor
        α ∈ (0, 1), the same on every rank.
    group : ProcessGroup, optional
        Default: the default process group.

    Returns
    -------
    QNGState
        This rank's block of the updated state. A non-finite ``d`` on any rank
        leaves it unchanged except ``num_nonfinite``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1) or ``d`` has the wrong shape or device.
    TypeError
        If ``d`` is not a real floating tensor of the state's dtype.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    xp = _check_qng(state)
    check_like(d, "d", state.factors, shapes=((state.factors.shape[1],),))
    check_decay(decay, like=state.factors)
    core_qng.check_decay_range(xp, decay, state.factors)
    _check_initialized()
    return core_qng.update(xp, state, d, decay=decay, reduce=_all_reduce(group))


def qng_precondition(state: QNGState, g: Array, *, group: Group = None) -> Array:
    r"""Apply ``(ÂÂᵀ)⁻¹ g = Â⁻ᵀ Â⁻¹ g`` to this rank's block of ``g`` (collective).

    2τ factor solves, each after one all-reduce of ``q_iᵀv`` (one number per
    column of ``g``).

    Parameters
    ----------
    state : QNGState
        This rank's block.
    g : torch.Tensor, shape (local_dim,) or (local_dim, k)
        This rank's block of the gradient(s).
    group : ProcessGroup, optional
        Default: the default process group.

    Returns
    -------
    torch.Tensor, same shape as ``g``
        This rank's block of ``(ÂÂᵀ)⁻¹ g``.

    Raises
    ------
    ValueError
        If ``g`` has the wrong shape or device.
    TypeError
        If ``g`` is not a real floating tensor of the state's dtype.
    RuntimeError
        If ``torch.distributed`` is not initialised.
    """
    _check_qng(state)
    dim = state.factors.shape[1]
    check_like(g, "g", state.factors, shapes=((dim,), (dim, -1)))
    _check_initialized()
    reduce = _all_reduce(group)
    half = core_qng.factor_product(state, g, inverse=True, transpose=False, reduce=reduce)
    return core_qng.factor_product(state, half, inverse=True, transpose=True, reduce=reduce)


def update_precondition(
    approximation: Any, state: Any, d: Array, g: Array, *, damping: Any, group: Group = None
) -> tuple[Any, Array]:
    r"""One fused step of any shardable approximation on this rank's block: fold ``d`` in, precondition ``g``.

    The step of ``approximation.update_precondition`` (for Ginger, one read of
    the rank's rows of ``U`` for the reductions and one for the rotation and
    the query), with every sum over ``dim`` completed by an all-reduce over
    ``group`` (O(τ) numbers for Ginger). All ranks call it together.

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger or lowrank_ggn.QNG
        The method and its hyper-parameters (``lg.ginger(...)``, ``lg.qng(...)``).
    state : GingerState or QNGState
        This rank's block of the state (:func:`ginger_init`, :func:`qng_init`).
    d, g : torch.Tensor, shape (local_dim,)
        This rank's blocks of the curvature vector and of the gradient, in the
        state's dtype and on its device.
    damping : float, 0-d tensor or None
        γ > 0, the same on every rank; ``None`` for QNG.
    group : ProcessGroup, optional
        Default: the default group.

    Returns
    -------
    tuple
        ``(new_state, y)``, ``y`` this rank's block of the preconditioned gradient.

    Raises
    ------
    ValueError
        If the approximation cannot be split across ranks (the product form),
        ``damping`` is invalid, or a block has the wrong shape.
    TypeError
        If an argument is not a tensor of the state's dtype.
    RuntimeError
        If the process group is not initialised.
    """
    check_approximation(approximation)
    if not approximation.shardable:
        msg = f"approximation {approximation.name!r} cannot be split across ranks; use lg.ginger or lg.qng"
        raise ValueError(msg)
    xp = _check_ginger(state) if isinstance(state, GingerState) else _check_qng(state)
    long = state.basis if isinstance(state, GingerState) else state.factors
    local_dim = long.shape[0] if isinstance(state, GingerState) else long.shape[1]
    for x, name in ((d, "d"), (g, "g")):
        _check_torch(x, name)
        check_like(x, name, long, shapes=((local_dim,),))
    if approximation.needs_damping:
        check_damping(damping, like=long)
    elif damping is not None:
        msg = f"damping must be None for {approximation.name!r}, whose damping is implicit"
        raise ValueError(msg)
    _check_initialized()
    return approximation.fold_precondition(xp, state, d, g, damping=damping, reduce=_all_reduce(group))
