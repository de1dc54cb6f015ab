r"""Ginger: a rank-τ eigendecomposition of the EMA of the curvature (the paper's §2.3).

The state represents the damped curvature

.. math:: G_{t,\gamma} = \gamma I + U_t \operatorname{diag}(\sigma_t) U_t^\top

(Eq 14) without γ: the damping is an argument of the query, so it can change
at every step at no cost. :func:`ginger_update` folds a curvature vector
``d_t`` (Eq 8) into the EMA ``α U Σ Uᵀ + (1 − α) d dᵀ`` (Eq 7) and truncates
to rank τ by Eckart–Young; :func:`ginger_precondition` applies ``G⁻¹``
(Eq 15–16).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from lowrank_ggn._eigen_update import (
    _plan,
    _reject,
    _reorthonormalize,
    _reorthonormalize_gram,
    _unit_max,
    finite_max_abs,
)
from lowrank_ggn._operator import _scalar, _sigma_from_kappa, _solve, damped_dense
from lowrank_ggn._reduction import LOCAL, Reduction
from lowrank_ggn._sherman_morrison import _step
from lowrank_ggn._typing import Array, ArrayNamespace, Device, DType
from lowrank_ggn._validation import cast_like, check_damping, check_decay, check_dim_rank, check_like, has_fields
from lowrank_ggn.backends import (
    array_namespace,
    canonical_float_dtype,
    cond,
    floating_point_errors_ignored,
    is_array,
    resolve_namespace,
)
from lowrank_ggn.backends._kernels import can_overwrite, project, rotate

__all__ = [
    "GingerState",
    "ginger_dense",
    "ginger_init",
    "ginger_precondition",
    "ginger_reorthonormalize",
    "ginger_update",
    "ginger_update_precondition",
]

_METHODS = ("eigen", "sherman-morrison")
# Re-orthonormalisation period of reorthonormalize_every="auto" for float32 states (float64: never);
# chosen from benchmarks/soak_float32.py and benchmarks/reorth_cost.py, see ginger_update.
_AUTO_REORTHONORMALIZE_FLOAT32 = 100


class GingerState(NamedTuple):
    r"""State of Ginger: the undamped rank-τ curvature ``U diag(σ) Uᵀ``.

    A NamedTuple, hence a JAX pytree; every field is an array of the state's
    namespace, dtype and device.

    Parameters
    ----------
    basis, eigvals, discarded, step, num_nonfinite : array
        The fields, in this order (see the attributes below).
    """

    basis: Array
    """U, shape (dim, rank), orthonormal columns."""
    eigvals: Array
    """Eigenvalues σ, shape (rank,), non-negative and sorted descending."""
    discarded: Array
    """0-d: trace of the curvature dropped by truncation so far, EMA-weighted.

    ``trace(M_t) = sum(σ) + discarded`` for the exact EMA ``M_t``."""
    step: Array
    """0-d int32: number of accepted updates."""
    num_nonfinite: Array
    """0-d int32: number of updates rejected as non-finite.

    An update is rejected when the curvature vector (or the result) is not
    finite; it leaves the state unchanged."""


def ginger_init(
    dim: int,
    rank: int,
    *,
    xp: Any | None = None,
    dtype: DType | None = None,
    device: Device | None = None,
) -> GingerState:
    """Create an empty Ginger state (σ = 0; the represented curvature is 0).

    The initial basis is the first ``rank`` columns of the identity: with
    σ = 0 any orthonormal basis represents the same matrix, and a
    deterministic one makes runs reproducible without a random key.

    Parameters
    ----------
    dim : int
        Number of parameters d.
    rank : int
        τ, with ``1 ≤ rank < dim`` (Lemma 1 needs τ < d).
    xp : module, optional
        Array namespace or library module (``numpy``, ``jax.numpy``,
        ``torch``, ``cupy``, ``array_api_strict``). Default: NumPy.
    dtype : dtype, optional
        ``float32`` or ``float64`` of that namespace. Default: the
        namespace's default real floating dtype.
    device : device, optional
        Where to allocate the state. Default: the namespace's default.

    Returns
    -------
    GingerState
        The empty state, in the requested namespace, dtype and device.

    Raises
    ------
    TypeError
        If ``dim``/``rank`` are not integers or ``dtype`` is not float32/float64.
    ValueError
        If ``rank < 1`` or ``rank >= dim``.

    Examples
    --------
    >>> import numpy as np
    >>> import lowrank_ggn as lg
    >>> state = lg.ginger_init(100, 4, xp=np)
    >>> state.basis.shape, state.eigvals.shape
    ((100, 4), (4,))
    """
    dim, rank = check_dim_rank(dim, rank)
    ns = resolve_namespace(xp)
    dt = canonical_float_dtype(ns, dtype)
    basis = ns.eye(dim, rank, dtype=dt, device=device)
    if basis.dtype != dt:
        msg = f"dtype {dt} is not available in this namespace (JAX needs jax_enable_x64 for float64)"
        raise TypeError(msg)
    return GingerState(
        basis=basis,
        eigvals=ns.zeros((rank,), dtype=dt, device=device),
        discarded=ns.zeros((), dtype=dt, device=device),
        step=ns.zeros((), dtype=ns.int32, device=device),
        num_nonfinite=ns.zeros((), dtype=ns.int32, device=device),
    )


def _check_state(state: Any) -> ArrayNamespace:
    if not has_fields(state, GingerState._fields):
        msg = f"state must be a GingerState, got {type(state).__name__}"
        raise TypeError(msg)
    basis = state.basis
    if not is_array(basis) or basis.ndim != 2:
        msg = "state.basis must be a 2-d array (dim, rank)"
        raise TypeError(msg)
    xp = array_namespace(basis)
    if not xp.isdtype(basis.dtype, "real floating"):
        msg = f"state.basis must have a real floating dtype, got {basis.dtype}"
        raise TypeError(msg)
    check_like(state.eigvals, "state.eigvals", basis, shapes=((basis.shape[1],),))
    check_like(state.discarded, "state.discarded", basis, shapes=((),))
    return xp


def _resolve_reorthonormalize_every(xp: Any, dtype: Any, every: Any) -> int | None:
    """Check ``reorthonormalize_every`` and resolve ``"auto"`` for a state of ``dtype``."""
    if isinstance(every, str) and every == "auto":
        return _AUTO_REORTHONORMALIZE_FLOAT32 if xp.finfo(dtype).bits < 64 else None
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        msg = f"reorthonormalize_every must be a positive integer, 'auto' or None, got {every!r}"
        raise ValueError(msg)
    return every


@floating_point_errors_ignored()
def ginger_update(
    state: GingerState,
    d: Array,
    *,
    decay: Any,
    damping: Any = None,
    method: Literal["eigen", "sherman-morrison"] = "eigen",
    reorthonormalize_every: int | Literal["auto"] | None = "auto",
    donate: bool = False,
) -> GingerState:
    r"""Fold one curvature vector into the state (Eq 7, truncated to rank τ).

    The eigen path (default) computes the best rank-τ approximation of

    .. math:: \alpha\, U \operatorname{diag}(\sigma) U^\top + (1 - \alpha)\, d d^\top

    by Brand's rank-one eigen-update (see :func:`lowrank_eigh_update`). The
    ``"sherman-morrison"`` path is the paper's Eq 17 (corrected): it updates
    the inverse of the damped EMA, truncates there and maps back with Eq 18.
    Both keep the same τ directions and agree in exact arithmetic; the
    Sherman–Morrison path loses precision when σ ≫ γ (``1 − γκ ≈ γ/σ``), so
    keep it for fidelity studies.

    Parameters
    ----------
    state : GingerState
        Current state.
    d : array, shape (dim,)
        Curvature vector ``d_t``: the sampled-label gradient of Eq 8 (the
        plain gradient gives the empirical Fisher). Same namespace, dtype and
        device as the state; float16/bfloat16 is also accepted and promoted
        exactly to the state's dtype.
    decay : float or 0-d array
        α ∈ (0, 1).
    damping : float or 0-d array, optional
        γ > 0; required by, and only accepted with, ``method="sherman-morrison"``.
    method : {"eigen", "sherman-morrison"}
        Update path.
    reorthonormalize_every : int, "auto" or None, default "auto"
        Re-orthonormalise the basis after every k-th accepted update (see
        :func:`ginger_reorthonormalize`); ``None`` never does. ``"auto"``:
        every 100 updates for a float32 state, never for float64. Measured
        over 10⁵ float32 updates at d = 10⁴, τ = 16, α = 0.999 against a
        float64 run (``benchmarks/soak_float32.py``, JAX): without
        re-orthonormalisation ``‖UᵀU − I‖₂`` reaches 2.9e-4, and 5.6e-3 where
        the small eigendecompositions cannot run in float64 (JAX without
        ``jax_enable_x64``; the eigenvalue and direction errors then exceed
        1e-3, as the query amplifies it by about σ/γ). Every 1000 updates it
        stays below 5.9e-6, every 100 below 1.1e-6 (1.6e-5 without float64;
        every 25: 8.5e-6), with eigenvalues within 9e-6 (1.1e-4) and
        preconditioned directions within 8e-6 (3.2e-5) of float64. One
        re-orthonormalisation costs about two updates, so every 100 costs
        about 2% (``benchmarks/reorth_cost.py``). float64 drifts by about
        1e-16 per update and needs none.
    donate : bool, default False
        Opt-in buffer reuse on NumPy and PyTorch (CPU): the caller gives up
        ``state`` and the new basis is written into the memory of the old
        one, block by block, instead of a new d×τ array (the old state must
        not be used afterwards). Ignored elsewhere; on JAX, donate the state
        to ``jax.jit`` instead (``donate_argnums``).

    Returns
    -------
    GingerState
        The updated state. If ``d`` (or the result) is not finite, the state
        is returned unchanged except ``num_nonfinite``, which is incremented;
        this also holds under ``jax.jit``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1) (or rounds to 0 or 1 in the state's dtype),
        ``damping`` is missing, not positive, not finite or has ``γ²`` outside
        the dtype's normal range for the Sherman–Morrison path (or is given
        for the eigen path),
        ``method`` is unknown, ``reorthonormalize_every < 1``, or ``d`` has the
        wrong shape or device.
    TypeError
        If ``d`` is not a real floating array of the state's namespace and dtype.
    """
    xp = _check_state(state)
    basis = state.basis
    check_like(d, "d", basis, shapes=((basis.shape[0],),), promote=True)
    d = cast_like(xp, d, basis)
    check_decay(decay, like=basis)
    if method not in _METHODS:
        msg = f"method must be one of {_METHODS}, got {method!r}"
        raise ValueError(msg)
    if method == "sherman-morrison":
        if damping is None:
            msg = "method='sherman-morrison' needs damping (γ > 0)"
            raise ValueError(msg)
        check_damping(damping, like=basis, squared=True)
    elif damping is not None:
        msg = "damping is not used by method='eigen'; pass it to ginger_precondition"
        raise ValueError(msg)
    reorthonormalize_every = _resolve_reorthonormalize_every(xp, basis.dtype, reorthonormalize_every)
    _check_donate(donate)
    return _ginger_update(
        xp,
        state,
        d,
        decay=decay,
        damping=damping,
        method=method,
        reorthonormalize_every=reorthonormalize_every,
        donate=donate,
    )


def _ginger_update(
    xp: ArrayNamespace,
    state: GingerState,
    d: Array,
    *,
    decay: Any,
    damping: Any,
    method: str,
    reorthonormalize_every: int | None,
    reduce: Reduction = LOCAL,
    donate: bool = False,
) -> GingerState:
    """Unchecked core of :func:`ginger_update` (``reduce`` completes the sums over rows)."""
    new, _, ok = _advance(
        xp, state, d, None, decay=decay, method=method, damping=damping, gamma=None, donate=donate, reduce=reduce
    )
    return _maybe_reorthonormalize(xp, new, ok, reorthonormalize_every, reduce)


def _check_donate(donate: Any) -> None:
    if not isinstance(donate, bool):
        msg = f"donate must be a bool, got {type(donate).__name__}"
        raise TypeError(msg)


def _maybe_reorthonormalize(
    xp: ArrayNamespace, new: GingerState, ok: Array, every: int | None, reduce: Reduction = LOCAL
) -> GingerState:
    if every is None:
        return new
    due = ok & (new.step % every == 0)
    return cond(due, lambda s: _reorth_state(xp, s, reduce), lambda s: s, new)


def _advance(
    xp: ArrayNamespace,
    state: GingerState,
    d: Array,
    g: Array | None,
    *,
    decay: Any,
    method: str,
    damping: Any,
    gamma: Any,
    donate: bool,
    reduce: Reduction = LOCAL,
) -> tuple[GingerState, Array | None, Array]:
    r"""One update (and, when ``g`` is given, the query of the new state) in two reads of ``U``.

    Pass 1 reads ``U`` for the reductions ``Uᵀ[d, g]``; everything else is
    planned on (τ+1)×(τ+1) arrays; pass 2 reads ``U`` and writes
    ``U' = U·rot + v ⊗ b`` together with ``y = g/γ + U'z``, which expands to
    ``g/γ + U(rot·z) + v (b·z)`` and so needs no third pass. A rejected
    update (non-finite ``d`` or result) rotates by the identity instead of
    selecting between two bases.

    ``reduce`` completes the sums over rows of a row-split state: one
    all-reduce for the finiteness of ``d``, one for ``Uᵀ[d, g]`` together with
    ``dᵀd`` and ``dᵀg``, and one for ``‖p̃‖`` and ``p̃ᵀg`` on the
    (re-orthogonalising) CGS2 path. The Sherman–Morrison method
    (``method="sherman-morrison"``) supports only the local reduction.
    """
    basis, eigvals = state.basis, state.eigvals
    alpha = _scalar(xp, decay, basis)
    # Finiteness and max|d| from max d and min d: no temporary of the size of d.
    finite_here, d_max = finite_max_abs(xp, d)
    finite = reduce.all(finite_here)
    d_safe = cond(finite, lambda d: d, xp.zeros_like, d)
    if method == "eigen":
        # v = d/max|d| is finite (|v| ≤ 1) whenever d is, and d_safe = 0 otherwise.
        d_max = reduce.max(xp.where(finite, d_max, xp.zeros_like(d_max)))
        v, rho = _unit_max(xp, d_safe, 1 - alpha, v_max=d_max)
        scale, base = alpha, eigvals
    else:
        gamma_sm = _scalar(xp, damping, basis)
        sm = _step(xp, basis, eigvals, d_safe, decay=alpha, damping=gamma_sm)
        v, rho = _unit_max(xp, sm.h, sm.beta, reduce)
        scale, base = xp.ones_like(alpha), sm.kappa
        # The Sherman–Morrison vector h can overflow for a finite d: the update is then rejected,
        # and the identity rotation U·I + v ⊗ 0 leaves U exactly unchanged only for a finite v.
        v = xp.where(xp.isfinite(v), v, xp.zeros_like(v))
    coef, dots = reduce.sum_together(xp, *project(xp, basis, (v,) if g is None else (v, g)))
    vg = None if g is None else (g, dots[1])
    plan = _plan(xp, basis, base, v, c=coef[:, 0], vv=dots[0], rho=rho, s=scale, dot_with=vg, reduce=reduce)
    if method == "eigen":
        new_eigvals, dropped = plan.eigvals, plan.discarded
    else:
        new_eigvals = _sigma_from_kappa(xp, plan.eigvals, gamma_sm)
        dropped = _sigma_from_kappa(xp, plan.discarded, gamma_sm)
    ok = finite & xp.all(xp.isfinite(new_eigvals)) & xp.isfinite(dropped)
    rot, vrot = _reject(xp, plan, ok)
    new_eigvals = xp.where(ok, new_eigvals, eigvals)
    query = None
    if g is not None:
        gam = _scalar(xp, gamma, basis)
        # U'ᵀg = rotᵀ(Uᵀg) + b·(vecᵀg): no further pass over U.
        vec_dot = xp.where(ok, plan.vec_dot, xp.zeros_like(plan.vec_dot))
        c_new = rot.T @ coef[:, 1] + vrot * vec_dot

        z = -(c_new / gam) * (new_eigvals / (gam + new_eigvals))
        query = (rot @ z, xp.sum(vrot * z), g, 1 / gam)
    out = basis if donate and can_overwrite(xp, basis) else None
    new_basis, y = rotate(xp, basis, rot, plan.vec, vrot, query=query, out=out)
    new = GingerState(
        basis=new_basis,
        eigvals=new_eigvals,
        discarded=xp.where(ok, alpha * state.discarded + dropped, state.discarded),
        step=state.step + xp.astype(ok, state.step.dtype),
        num_nonfinite=state.num_nonfinite + xp.astype(~ok, state.num_nonfinite.dtype),
    )
    return new, y, ok


def _reorth_state(xp: ArrayNamespace, state: GingerState, reduce: Reduction = LOCAL) -> GingerState:
    if reduce is LOCAL:
        basis, eigvals = _reorthonormalize(xp, state.basis, state.eigvals)
    else:  # a row-split basis: no QR, only the τ×τ Gram matrix is reduced
        basis, eigvals = _reorthonormalize_gram(xp, state.basis, state.eigvals, reduce)
    return state._replace(basis=basis, eigvals=eigvals)


def ginger_reorthonormalize(state: GingerState) -> GingerState:
    r"""Re-orthonormalise the basis without changing the represented matrix.

    In float32, ``‖UᵀU − I‖`` random-walks over many updates, and the query
    amplifies that error by about σ/γ. This rotates ``U`` back to exact
    orthonormality (thin QR, then an eigendecomposition of the τ×τ core, see
    :func:`reorthonormalize`) so that ``U diag(σ) Uᵀ`` is unchanged to
    working precision. Cost O(dim · rank²).

    Parameters
    ----------
    state : GingerState
        The state to re-orthonormalise.

    Returns
    -------
    GingerState
        Same ``step``, ``discarded`` and ``num_nonfinite``.
    """
    xp = _check_state(state)
    return _reorth_state(xp, state)


def ginger_precondition(state: GingerState, g: Array, *, damping: Any) -> Array:
    r"""Apply the inverse of the damped curvature: :math:`(\gamma I + U\operatorname{diag}(\sigma)U^\top)^{-1} g`.

    Eq 15–16 in their cancellation-free form (see :func:`damped_solve`).
    Cost O(dim · rank) per vector. The eigenvalues of this inverse lie in
    ``[1/(γ + σ_1), 1/γ]`` (Lemma 1).

    Parameters
    ----------
    state : GingerState
        The curvature ``U diag(σ) Uᵀ``.
    g : array, shape (dim,) or (dim, k)
        Gradient(s), one per column: the state's dtype, or float16/bfloat16
        (promoted to it exactly; the result is rounded back once).
    damping : float or 0-d array
        γ > 0. It can change at every call (damping schedules,
        Levenberg–Marquardt); it may be traced under ``jax.jit``.

    Returns
    -------
    array, same shape and dtype as ``g``
        ``(γI + U diag(σ) Uᵀ)⁻¹ g``.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite or outside the normal range
        of the state's dtype (when concrete), or ``g`` has the wrong shape or
        device.
    TypeError
        If ``g`` is not a real floating array of the state's namespace and dtype.
    """
    xp = _check_state(state)
    dim = state.basis.shape[0]
    check_like(g, "g", state.basis, shapes=((dim,), (dim, -1)), promote=True)
    check_damping(damping, like=state.basis)
    y = _solve(xp, state.basis, state.eigvals, cast_like(xp, g, state.basis), _scalar(xp, damping, state.basis))
    return cast_like(xp, y, g)


@floating_point_errors_ignored()
def ginger_update_precondition(
    state: GingerState,
    d: Array,
    g: Array,
    *,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | Literal["auto"] | None = "auto",
    donate: bool = False,
) -> tuple[GingerState, Array]:
    r"""Update the state with ``d`` and precondition ``g`` with the new state, in two reads of ``U``.

    Equivalent to

    .. code-block:: python

        state = ginger_update(state, d, decay=decay)
        y = ginger_precondition(state, g, damping=damping)

    but cheaper: the reductions ``Uᵀd`` and ``Uᵀg`` share one read of ``U``,
    and the query of the new state (Eq 16),

    .. math::
       y = \frac{g}{\gamma} + U' z, \qquad
       z = -\frac{\sigma' \odot c'}{\gamma(\gamma + \sigma')}, \qquad
       c' = U'^\top g = R^\top (U^\top g) + b\,(v^\top g),

    is evaluated through the old basis (``U' = U R + v bᵀ``, so
    ``U'z = U(Rz) + v (bᵀz)``) in the same pass that writes ``U'``. About three
    passes over ``U`` in all — one read for the reductions, one read and one
    write for the rotation — instead of five for the two calls.

    Parameters
    ----------
    state : GingerState
        The current state.
    d : array, shape (dim,)
        Curvature vector (Eq 8).
    g : array, shape (dim,)
        The gradient to precondition.
    decay : float or 0-d array
        α ∈ (0, 1).
    damping : float or 0-d array
        γ > 0 for the query; may be traced under ``jax.jit``.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`ginger_update`. A step that re-orthonormalises returns
        the query of the state before re-orthonormalisation; both represent
        the same matrix.
    donate : bool, default False
        As in :func:`ginger_update`: opt-in reuse of the basis's memory on
        NumPy and PyTorch; on JAX use ``jax.jit(..., donate_argnums=0)``.

    Returns
    -------
    tuple
        ``(new_state, y)`` with ``y = (γI + U' diag(σ') U'ᵀ)⁻¹ g``. A rejected
        update (non-finite ``d``) leaves the state unchanged (except
        ``num_nonfinite``) and ``y`` is the query of that state.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``damping`` is not positive and finite, or a
        shape or device is wrong.
    TypeError
        If ``d`` or ``g`` is not a real floating array of the state's namespace and dtype.
    """
    xp = _check_state(state)
    basis = state.basis
    check_like(d, "d", basis, shapes=((basis.shape[0],),), promote=True)
    check_like(g, "g", basis, shapes=((basis.shape[0],),), promote=True)
    g_in = g
    d, g = cast_like(xp, d, basis), cast_like(xp, g, basis)
    check_decay(decay, like=basis)
    check_damping(damping, like=basis)
    reorthonormalize_every = _resolve_reorthonormalize_every(xp, basis.dtype, reorthonormalize_every)
    _check_donate(donate)
    new, y, ok = _advance(xp, state, d, g, decay=decay, method="eigen", damping=None, gamma=damping, donate=donate)
    return _maybe_reorthonormalize(xp, new, ok, reorthonormalize_every), cast_like(xp, y, g_in)


def ginger_dense(state: GingerState, *, damping: Any = 0.0) -> Array:
    """Materialise ``γI + U diag(σ) Uᵀ`` (dim × dim) for tests and studies.

    Parameters
    ----------
    state : GingerState
        The curvature ``U diag(σ) Uᵀ``.
    damping : float, default 0
        γ ≥ 0; 0 gives the undamped curvature.

    Returns
    -------
    array, shape (dim, dim)
        ``γI + U diag(σ) Uᵀ``.
    """
    _check_state(state)
    return damped_dense(state.basis, state.eigvals, damping=damping)
