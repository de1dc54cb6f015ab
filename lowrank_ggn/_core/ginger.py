r"""Ginger's update, fused update + query, Sherman–Morrison update and re-orthonormalisation, unchecked.

The state is any NamedTuple with the fields of :class:`lowrank_ggn.GingerState`
(``basis``, ``eigvals``, ``discarded``, ``escaped``, ``step``, ``num_nonfinite``); new states
are made with ``state._replace``. The public face, :mod:`lowrank_ggn._ginger`,
checks and casts the arguments; the approximation protocol
(:func:`lowrank_ggn.ginger`), the optimisers and the sharded front-ends call
these functions directly.

One update is two passes over ``U``:

1. one read for the reductions ``Uᵀ[v, g]`` (with ``vᵀv`` and ``vᵀg``), after
   which Brand's update is planned on (τ+1)×(τ+1) arrays
   (:func:`lowrank_ggn._core.brand.plan`);
2. one read and one write for ``U' = U·R + v ⊗ b``, which also evaluates the
   query of the new state ``y = (g − U'c')/γ + U'w`` (``U'x = U(Rx) + v(bᵀx)``) when a
   gradient is given (:func:`update_precondition`).

Bookkeeping: ``discarded ← α·discarded + (trace dropped)`` and
``escaped ← α·escaped + δ`` with δ the spectral norm of the curvature dropped
at this step (the eigenvalue λ_{τ+1}, plus the residual mass ``ρr²`` of a
rounding-level residual); for Ginger the two increments are equal. The
``truncate`` hook of :func:`update` and :func:`update_precondition` replaces
Eckart–Young's truncation by another rule on the same plan (Frequent
Directions: :mod:`lowrank_ggn._core.frequent_directions`).

A rejected update (non-finite ``d`` or result) rotates by the identity, which
leaves ``U`` bit-for-bit unchanged, and counts in ``num_nonfinite``.

``reduce`` completes every sum over rows of a row-split state: one all-reduce
for the finiteness and ``max|d|``, one for ``Uᵀ[v, g]`` with ``vᵀv`` and
``vᵀg``, and one more on the (re-orthogonalising) CGS2 path. The
Sherman–Morrison path supports only the local reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from lowrank_ggn._core import sherman_morrison
from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn._core.brand import (
    Plan,
    finite_max_abs,
    orthogonalize,
    plan,
    plan_core,
    reject,
    reorthonormalize_gram,
    reorthonormalize_qr,
    unit_max,
)
from lowrank_ggn._core.kernels import can_overwrite, preferred_view, project, rotate
from lowrank_ggn._core.operator import as_scalar, sigma_from_kappa, solve
from lowrank_ggn._core.reduction import LOCAL, Reduction
from lowrank_ggn.backends import cond, is_traced

__all__ = [
    "Truncation",
    "eckart_young",
    "maybe_reorthonormalize",
    "precondition",
    "reorthonormalize",
    "saturating_increment",
    "update",
    "update_precondition",
    "update_precondition_batch",
    "update_sherman_morrison",
]


class Truncation(NamedTuple):
    """What a truncation rule keeps and drops at one step."""

    eigvals: Array
    """(rank,): the kept eigenvalues, sorted descending, ≥ 0."""
    trace: Array
    """0-d: the trace of the curvature dropped (added to ``discarded``)."""
    norm: Array
    """0-d: a bound on its spectral norm, δ_t (added to ``escaped``)."""


def eckart_young(xp: ArrayNamespace, brand: Plan) -> Truncation:  # noqa: ARG001
    """Ginger's rule: keep the τ largest eigenvalues; one eigenvalue (plus residual mass) is dropped."""
    return Truncation(brand.eigvals, brand.discarded, brand.discarded)


TruncationRule = Callable[[ArrayNamespace, Plan], Truncation]


class _Term(NamedTuple):
    """The rank-one term ``rho · v vᵀ`` to fold into ``scale · U diag(base) Uᵀ``."""

    v: Array
    rho: Array
    scale: Array
    base: Array
    finite: Array


def _eigen_term(xp: ArrayNamespace, state: Any, d: Array, alpha: Array, reduce: Reduction) -> _Term:
    """``(1−α) d dᵀ`` as ``ρ v vᵀ`` with ``v = d/max|d|`` (finite, |v| ≤ 1); ``v = 0`` for a non-finite ``d``."""
    # Finiteness and max|d| from max d and min d: no temporary of the size of d.
    finite_here, d_max = finite_max_abs(xp, d)
    finite = reduce.all(finite_here)
    # Under a JAX transformation a select, which XLA fuses into the division of unit_max (one pass
    # over d; a conditional would copy d and cost a control-flow step); eagerly no copy of a finite d.
    d_safe = xp.where(finite, d, xp.zeros_like(d)) if is_traced(finite) else cond(finite, lambda d: d, xp.zeros_like, d)
    d_max = reduce.max(xp.where(finite, d_max, xp.zeros_like(d_max)))
    v, rho = unit_max(xp, d_safe, 1 - alpha, v_max=d_max, basis=state.basis)
    return _Term(v, rho, alpha, state.eigvals, finite)


def _plan(xp: ArrayNamespace, state: Any, term: _Term, g: Array | None, reduce: Reduction) -> tuple[Array, Plan]:
    """Pass 1 (``Uᵀ[v, g]``) and Brand's plan; returns ``(Uᵀ[v, g], plan)``."""
    basis, rows = preferred_view(xp, state.basis)
    coef, dots = reduce.sum_together(xp, *project(xp, basis, (term.v,) if g is None else (term.v, g), rows=rows))
    dot_with = None if g is None else (g, dots[1])
    brand = plan(
        xp,
        basis,
        term.base,
        term.v,
        c=coef[:, 0],
        vv=dots[0],
        rho=term.rho,
        s=term.scale,
        dot_with=dot_with,
        reduce=reduce,
        rows=rows,
    )
    return coef, brand


def _finish(
    xp: ArrayNamespace,
    state: Any,
    brand: Plan,
    *,
    cut: Truncation,
    ok: Array,
    alpha: Array,
    query: tuple[Array, Array, Array, Array] | None,
    donate: bool,
    period: int | None,
) -> tuple[Any, Array | None]:
    """Pass 2: rotate the basis (and evaluate the query), and assemble the new state."""
    basis = state.basis
    rot, vrot = reject(xp, brand, ok)
    out = basis if donate and can_overwrite(xp, basis) else None
    view, rows = preferred_view(xp, basis)
    new_basis, y = rotate(xp, view, rot, brand.vec, vrot, query=query, out=out, rows=rows)
    new = state._replace(
        basis=new_basis,
        eigvals=xp.where(ok, cut.eigvals, state.eigvals),
        discarded=xp.where(ok, alpha * state.discarded + cut.trace, state.discarded),
        escaped=xp.where(ok, alpha * state.escaped + cut.norm, state.escaped),
        step=saturating_increment(xp, state.step, ok, period=period),
        num_nonfinite=saturating_increment(xp, state.num_nonfinite, ~ok),
    )
    return new, y


def saturating_increment(xp: ArrayNamespace, counter: Array, inc: Array, *, period: int | None = None) -> Array:
    """``counter + inc`` (``inc`` a 0-d bool) that never wraps past the largest value of its integer dtype.

    At the top the counter saturates: it stays there, or with ``period`` it
    steps back to ``top − period + 1`` so that ``counter % period`` keeps
    cycling through every residue (a schedule driven by the counter keeps its
    period forever, within ``period`` of the top).
    """
    top = xp.iinfo(counter.dtype).max
    at_top = counter >= top
    bumped = counter + xp.astype(inc & ~at_top, counter.dtype)
    back = xp.full_like(counter, top - (period or 1) + 1)
    return xp.where(inc & at_top, back, bumped)


def _accepted(xp: ArrayNamespace, finite: Array, cut: Truncation, state: Any, alpha: Array) -> Array:
    """Return whether ``d`` and the new state are finite, bookkeeping included (``α·discarded + trace``)."""
    discarded = alpha * state.discarded + cut.trace
    escaped = alpha * state.escaped + cut.norm
    return finite & xp.all(xp.isfinite(cut.eigvals)) & xp.isfinite(discarded) & xp.isfinite(escaped)


def update(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    *,
    decay: Any,
    reorthonormalize_every: int | None,
    reduce: Reduction = LOCAL,
    donate: bool = False,
    truncate: TruncationRule = eckart_young,
) -> Any:
    """Fold ``d`` into the EMA and truncate to rank τ (eigen path); re-orthonormalise when due.

    ``decay`` is a number or 0-d array, ``reorthonormalize_every`` already
    resolved (an int or None, see :mod:`lowrank_ggn._core.options`).
    ``truncate`` maps Brand's plan to the kept eigenvalues (default:
    Eckart–Young). Cost O(dim · rank²), two passes over the basis.
    """
    alpha = as_scalar(xp, decay, state.basis)
    term = _eigen_term(xp, state, d, alpha, reduce)
    _, brand = _plan(xp, state, term, None, reduce)
    cut = truncate(xp, brand)
    ok = _accepted(xp, term.finite, cut, state, alpha)
    new, _ = _finish(
        xp, state, brand, cut=cut, ok=ok, alpha=alpha, query=None, donate=donate, period=reorthonormalize_every
    )
    return maybe_reorthonormalize(xp, new, ok, reorthonormalize_every, reduce)


def update_precondition(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    g: Array,
    *,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | None,
    reduce: Reduction = LOCAL,
    donate: bool = False,
    truncate: TruncationRule = eckart_young,
) -> tuple[Any, Array]:
    r"""Update with ``d``, then ``y = (γI + U'diag(σ')U'ᵀ)⁻¹ g`` of the new state, in the same two passes.

    ``U'ᵀg = Rᵀ(Uᵀg) + b(vecᵀg)`` needs no further pass, and the query
    ``(g − U'c')/γ + U'(c'/(γ+σ'))`` is written by the rotation pass. A step that
    re-orthonormalises returns the query of the state before
    re-orthonormalisation (the same matrix). ``g`` has shape (dim,).

    Three phases: :func:`_fused_front` (pass 1, and CGS2 when needed),
    :func:`_fused_small` (small arrays only) and :func:`_fused_back` (pass 2);
    :func:`update_precondition_batch` runs the same phases for several blocks
    with one call of the small phase.
    """
    alpha = as_scalar(xp, decay, state.basis)
    gamma = as_scalar(xp, damping, state.basis)
    vec, small = _fused_front(xp, state, d, g, alpha, reduce=reduce)
    out = _fused_small(xp, small, alpha, gamma, truncate=truncate, period=reorthonormalize_every)
    return _fused_back(
        xp, state, vec, out, g, gamma=gamma, donate=donate, reorthonormalize_every=reorthonormalize_every, reduce=reduce
    )


def update_precondition_batch(
    xp: ArrayNamespace,
    states: Sequence[Any],
    ds: Sequence[Array],
    gs: Sequence[Array],
    *,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | None,
    map_small: Callable[[Callable[[Any], Any], Any], Any],
    truncate: TruncationRule = eckart_young,
) -> list[tuple[Any, Array]]:
    """:func:`update_precondition` of several independent blocks of the same rank and dtype, local reduction.

    ``map_small(fn, stacked)`` applies ``fn`` (a function of a NamedTuple of
    small arrays) to each slice along the leading axis of ``stacked`` and
    returns the results stacked the same way, e.g. ``jax.vmap(fn)(stacked)``:
    the (τ+1)×(τ+1) cores of all blocks are then decomposed by one batched
    ``eigh``. The passes over each basis are the single-block ones; results
    equal those of :func:`update_precondition` block by block.
    """
    if not states:
        return []
    alpha = as_scalar(xp, decay, states[0].basis)
    gamma = as_scalar(xp, damping, states[0].basis)
    fronts = [_fused_front(xp, st, d, g, alpha, reduce=LOCAL) for st, d, g in zip(states, ds, gs, strict=True)]
    stacked = _FusedIn(*(xp.stack([f[1][k] for f in fronts]) for k in range(len(_FusedIn._fields))))
    outs = map_small(
        lambda sm: _fused_small(xp, sm, alpha, gamma, truncate=truncate, period=reorthonormalize_every), stacked
    )
    return [
        _fused_back(
            xp,
            st,
            vec,
            _FusedOut(*(field[i] for field in outs)),
            g,
            gamma=gamma,
            donate=False,
            reorthonormalize_every=reorthonormalize_every,
            reduce=LOCAL,
        )
        for i, (st, (vec, _), g) in enumerate(zip(states, fronts, gs, strict=True))
    ]


class _FusedIn(NamedTuple):
    """The small arrays of one block after pass 1: the input of :func:`_fused_small`."""

    eigvals: Array
    discarded: Array
    escaped: Array
    step: Array
    num_nonfinite: Array
    finite: Array
    rho: Array
    vv: Array
    ug: Array
    c: Array
    r: Array
    vec_dot: Array
    shift: Array


class _FusedOut(NamedTuple):
    """The small arrays that pass 2 and the new state need: the output of :func:`_fused_small`."""

    rot: Array
    vrot: Array
    query_rot: Array
    query_vrot: Array
    eigvals: Array
    discarded: Array
    escaped: Array
    step: Array
    num_nonfinite: Array
    ok: Array


def _fused_front(
    xp: ArrayNamespace, state: Any, d: Array, g: Array, alpha: Array, *, reduce: Reduction
) -> tuple[Array, _FusedIn]:
    """Pass 1 (``Uᵀ[v, g]``) and the orthogonalisation of ``v``: ``(vec, small arrays)``."""
    term = _eigen_term(xp, state, d, alpha, reduce)
    basis, rows = preferred_view(xp, state.basis)
    coef, dots = reduce.sum_together(xp, *project(xp, basis, (term.v, g), rows=rows))
    ortho = orthogonalize(xp, basis, term.v, c=coef[:, 0], vv=dots[0], dot_with=(g, dots[1]), reduce=reduce, rows=rows)
    small = _FusedIn(
        state.eigvals,
        state.discarded,
        state.escaped,
        state.step,
        state.num_nonfinite,
        term.finite,
        term.rho,
        dots[0],
        coef[:, 1],
        ortho.c,
        ortho.r,
        ortho.vec_dot,
        ortho.shift,
    )
    return ortho.vec, small


def _fused_small(
    xp: ArrayNamespace, sm: _FusedIn, alpha: Array, gamma: Array, *, truncate: TruncationRule, period: int | None
) -> _FusedOut:
    """Brand's core, the truncation, the acceptance test and the query's coefficients, on small arrays only."""
    core = plan_core(xp, sm.eigvals, c=sm.c, r=sm.r, shift=sm.shift, vv=sm.vv, rho=sm.rho, s=alpha)
    # vec is not needed by the truncation rules nor by reject (pass 2 holds it).
    brand = Plan(core.rot, None, core.vrot, core.eigvals, core.discarded, sm.vec_dot)  # type: ignore[arg-type]
    cut = truncate(xp, brand)
    ok = _accepted(xp, sm.finite, cut, sm, alpha)
    rot, vrot = reject(xp, brand, ok)
    eigvals = xp.where(ok, cut.eigvals, sm.eigvals)
    vec_dot = xp.where(ok, sm.vec_dot, xp.zeros_like(sm.vec_dot))
    c_new = rot.T @ sm.ug + vrot * vec_dot
    # The split form (g − U'c')/γ + U'(c'/(γ+σ')) of _core.operator.solve, through U' = U·rot + vec ⊗ vrot.
    coef = xp.stack([-c_new, c_new / (gamma + eigvals)], axis=1)
    return _FusedOut(
        rot,
        vrot,
        rot @ coef,
        vrot @ coef,
        eigvals,
        xp.where(ok, alpha * sm.discarded + cut.trace, sm.discarded),
        xp.where(ok, alpha * sm.escaped + cut.norm, sm.escaped),
        saturating_increment(xp, sm.step, ok, period=period),
        saturating_increment(xp, sm.num_nonfinite, ~ok),
        ok,
    )


def _fused_back(
    xp: ArrayNamespace,
    state: Any,
    vec: Array,
    out: _FusedOut,
    g: Array,
    *,
    gamma: Array,
    donate: bool,
    reorthonormalize_every: int | None,
    reduce: Reduction,
) -> tuple[Any, Array]:
    """Pass 2: rotate the basis and write the query; assemble the new state; re-orthonormalise when due."""
    basis = state.basis
    dest = basis if donate and can_overwrite(xp, basis) else None
    query = (out.query_rot, out.query_vrot, g, 1 / gamma)
    view, rows = preferred_view(xp, basis)
    new_basis, y = rotate(xp, view, out.rot, vec, out.vrot, query=query, out=dest, rows=rows)
    new = state._replace(
        basis=new_basis,
        eigvals=out.eigvals,
        discarded=out.discarded,
        escaped=out.escaped,
        step=out.step,
        num_nonfinite=out.num_nonfinite,
    )
    return maybe_reorthonormalize(xp, new, out.ok, reorthonormalize_every, reduce), y


def update_sherman_morrison(
    xp: ArrayNamespace,
    state: Any,
    d: Array,
    *,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | None,
    donate: bool = False,
) -> Any:
    """The paper's Eq 17 path (corrected): Brand-update the inverse of the damped EMA, truncate, map back (Eq 18).

    Keeps the same τ directions as :func:`update` and agrees with it in exact
    arithmetic, but loses precision when σ ≫ γ. Local reduction only.
    """
    basis = state.basis
    alpha = as_scalar(xp, decay, basis)
    gamma = as_scalar(xp, damping, basis)
    finite = finite_max_abs(xp, d)[0]
    d_safe = cond(finite, lambda d: d, xp.zeros_like, d)
    kappa, h, beta = sherman_morrison.step(xp, basis, state.eigvals, d_safe, alpha=alpha, gamma=gamma)
    v, rho = unit_max(xp, h, beta)
    # h can overflow for a finite d: the update is then rejected, and the identity rotation
    # U·I + v ⊗ 0 leaves U exactly unchanged only for a finite v.
    v = xp.where(xp.isfinite(v), v, xp.zeros_like(v))
    _, brand = _plan(xp, state, _Term(v, rho, xp.ones_like(alpha), kappa, finite), None, LOCAL)
    eigvals = sigma_from_kappa(xp, brand.eigvals, gamma)
    # The eigenvalue dropped in the inverse domain, mapped back (Eq 18): the same direction's σ.
    dropped = sigma_from_kappa(xp, brand.discarded, gamma)
    cut = Truncation(eigvals, dropped, dropped)
    ok = _accepted(xp, finite, cut, state, alpha)
    new, _ = _finish(
        xp, state, brand, cut=cut, ok=ok, alpha=alpha, query=None, donate=donate, period=reorthonormalize_every
    )
    return maybe_reorthonormalize(xp, new, ok, reorthonormalize_every, LOCAL)


def precondition(xp: ArrayNamespace, state: Any, g: Array, *, damping: Any, reduce: Reduction = LOCAL) -> Array:
    """``(γI + U diag(σ) Uᵀ)⁻¹ g`` for ``g`` of shape (dim,) or (dim, k)."""
    return solve(xp, state.basis, state.eigvals, g, as_scalar(xp, damping, state.basis), reduce=reduce)


def reorthonormalize(xp: ArrayNamespace, state: Any, reduce: Reduction = LOCAL) -> Any:
    """Rotate the basis back to orthonormality; the represented matrix is unchanged.

    Thin QR on one device; from the Gram matrix ``UᵀU`` (one all-reduce of
    τ×τ numbers) on a row-split basis. Cost O(dim · rank²).
    """
    if reduce is LOCAL:
        basis, eigvals = reorthonormalize_qr(xp, state.basis, state.eigvals)
    else:
        basis, eigvals = reorthonormalize_gram(xp, state.basis, state.eigvals, reduce)
    return state._replace(basis=basis, eigvals=eigvals)


def maybe_reorthonormalize(
    xp: ArrayNamespace, state: Any, ok: Array, every: int | None, reduce: Reduction = LOCAL
) -> Any:
    """Re-orthonormalise after an accepted update that makes ``state.step`` a multiple of ``every``."""
    if every is None:
        return state
    due = ok & (state.step % every == 0)
    return cond(due, lambda s: reorthonormalize(xp, s, reduce), lambda s: s, state)
