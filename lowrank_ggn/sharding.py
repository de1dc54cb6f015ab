r"""Ginger and QNG with the parameter axis sharded across JAX devices.

When one device cannot hold the basis ``U`` (``dim × rank``: a 10⁹-parameter
model at τ = 32 needs 128 GB in float32), split its rows across devices, as
the parameters themselves are split. Every step of Ginger and QNG is then

* **row-local** for the big arrays: the rotation ``U' = [U p] V``, the
  residual ``d − Uc``, the factor products ``v − β(qᵀv)q`` touch only the
  rows a device holds;
* an **all-reduce of a τ-vector or a scalar** for each reduction over
  ``dim``: ``Uᵀv = Σ_k U_kᵀ v_k``, ``‖v‖²``, ``qᵀv``, ``all(isfinite(d))``;
* **replicated** for the small problems: the (τ+1)×(τ+1) eigenproblem of the
  update, the eigenvalues, the counters.

So each device holds ``dim·rank/n`` numbers of the state and a step
communicates O(τ) numbers, independently of ``dim``. The functions here run the
library's own update and query inside ``jax.shard_map``, with
``jax.lax.psum`` completing each reduction; the same algorithm runs on a single
device, and the results agree to rounding. Re-orthonormalisation reduces the
τ×τ Gram matrix ``UᵀU`` instead of computing a QR factorisation (which would
gather ``U``).

The states are the ordinary :class:`~lowrank_ggn.GingerState` and
:class:`~lowrank_ggn.QNGState`, with Ginger's ``basis`` sharded along its rows
(``PartitionSpec(axis, None)``), QNG's ``factors`` along its columns
(``PartitionSpec(None, axis)``) and every other field replicated. The vectors
``d`` and ``g`` and the result of a query are sharded like the rows of ``U``
(``PartitionSpec(axis)``), as a flattened parameter vector is under fully
sharded data parallelism. ``dim`` must be a multiple of the number of devices
along ``axis``: pad the parameter vector with zeros otherwise (zero rows are
exact: they stay zero in ``U`` and in every query).

Every function works on meshes whose axes are ``Explicit`` (the default of
``jax.make_mesh``) or ``Auto``, eagerly and under ``jax.jit``; inputs in
another layout (replicated, or on one device) are resharded on entry, and the
results are in the layout above.

>>> import jax, jax.numpy as jnp
>>> from jax.sharding import NamedSharding, PartitionSpec as P
>>> import lowrank_ggn.sharding as lgs
>>> mesh = jax.make_mesh((jax.device_count(),), ("fsdp",))
>>> state = lgs.ginger_init(1024, 8, mesh=mesh, axis="fsdp", dtype=jnp.float32)
>>> d = jax.device_put(jnp.ones(1024), NamedSharding(mesh, P("fsdp")))
>>> state = lgs.ginger_update(state, d, decay=0.99, mesh=mesh, axis="fsdp")
>>> step = lgs.ginger_precondition(state, d, damping=1e-3, mesh=mesh, axis="fsdp")

Without these functions, ``jax.jit`` with the shardings of
:func:`ginger_sharding` on an ``Auto`` mesh also partitions
:func:`lowrank_ggn.ginger_update` and :func:`lowrank_ggn.ginger_precondition`
into τ-sized all-reduces (XLA's sharding propagation finds them), but
:func:`lowrank_ggn.ginger_reorthonormalize` gathers the whole of ``U`` for its
QR factorisation, and on an ``Explicit`` mesh the products ``Uᵀv`` are
rejected as ambiguously sharded. The functions here avoid both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lowrank_ggn._core import ginger as core_ginger
from lowrank_ggn._core import operator as core_operator
from lowrank_ggn._core import qng as core_qng
from lowrank_ggn._core.aliases import Array, DType
from lowrank_ggn._core.checks import check_damping, check_decay, check_ginger_state, check_like, check_qng_state
from lowrank_ggn._core.options import DEFAULT_REORTHONORMALIZE_EVERY, resolve_reorthonormalize_every
from lowrank_ggn._core.reduction import AllReduce
from lowrank_ggn._ginger import GingerState
from lowrank_ggn._ginger import ginger_init as ginger_init_local
from lowrank_ggn._hlo import Collective, collectives
from lowrank_ggn._qng import QNGState
from lowrank_ggn._qng import qng_init as qng_init_local

__all__ = [
    "Collective",
    "collectives",
    "ginger_init",
    "ginger_precondition",
    "ginger_precondition_leaves",
    "ginger_reorthonormalize",
    "ginger_sharding",
    "ginger_update",
    "ginger_update_leaves",
    "init",
    "is_explicit",
    "precondition_leaves",
    "qng_init",
    "qng_precondition",
    "qng_precondition_leaves",
    "qng_sharding",
    "qng_update",
    "qng_update_leaves",
    "shard_ginger_state",
    "shard_qng_state",
    "splittable",
    "state_sharding",
    "update_precondition_leaves",
]

AxisName = str | tuple[str, ...]


# -- Shardings -------------------------------------------------------------------


def _axis_size(mesh: Mesh, axis: Any) -> int:
    """Return the number of devices along ``axis`` (a mesh axis name or a tuple of names)."""
    if not isinstance(mesh, Mesh):
        msg = f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}"
        raise TypeError(msg)
    names = (axis,) if isinstance(axis, str) else axis
    if not isinstance(names, tuple) or not names or not all(isinstance(n, str) for n in names):
        msg = f"axis must be a mesh axis name or a non-empty tuple of names, got {axis!r}"
        raise TypeError(msg)
    unknown = [n for n in names if n not in mesh.shape]
    if unknown:
        msg = f"axis names {unknown} are not axes of the mesh (its axes: {tuple(mesh.shape)})"
        raise ValueError(msg)
    return math.prod(mesh.shape[n] for n in names)


def _check_dim(dim: int, mesh: Mesh, axis: AxisName, name: str) -> None:
    n = _axis_size(mesh, axis)
    if dim % n:
        msg = (
            f"{name} has {dim} rows, not a multiple of the {n} devices along axis {axis!r}; "
            "pad the parameter vector with zeros to a multiple (zero rows are exact)"
        )
        raise ValueError(msg)


def ginger_sharding(mesh: Mesh, axis: AxisName) -> GingerState:
    """Return the shardings of a Ginger state with ``U`` split along its rows.

    Parameters
    ----------
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the ``dim`` rows of ``U``.

    Returns
    -------
    GingerState
        A state whose fields are ``jax.sharding.NamedSharding`` objects:
        ``basis`` is ``PartitionSpec(axis, None)``, every other field is
        replicated. Usable as ``in_shardings``/``out_shardings`` of
        ``jax.jit`` and with ``jax.device_put``.
    """
    _axis_size(mesh, axis)
    rep = NamedSharding(mesh, P())
    return GingerState(NamedSharding(mesh, P(axis, None)), rep, rep, rep, rep, rep)


def qng_sharding(mesh: Mesh, axis: AxisName) -> QNGState:
    """Return the shardings of a QNG state with the factors split along ``dim``.

    Parameters
    ----------
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the ``dim`` columns of the factors.

    Returns
    -------
    QNGState
        A state whose fields are ``jax.sharding.NamedSharding`` objects:
        ``factors`` (``rank × dim``) is ``PartitionSpec(None, axis)``, every
        other field is replicated.
    """
    _axis_size(mesh, axis)
    rep = NamedSharding(mesh, P())
    return QNGState(NamedSharding(mesh, P(None, axis)), rep, rep, rep, rep, rep)


def _ginger_specs(axis: AxisName) -> GingerState:
    return GingerState(P(axis, None), P(), P(), P(), P(), P())


def _qng_specs(axis: AxisName) -> QNGState:
    return QNGState(P(None, axis), P(), P(), P(), P(), P())


def _vector_spec(x: Array, axis: AxisName) -> P:
    return P(axis) if x.ndim == 1 else P(axis, None)


def is_explicit(mesh: Mesh, axis: AxisName) -> bool:
    """Return whether the mesh axes of ``axis`` are ``Explicit`` (sharding in types).

    Parameters
    ----------
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        Mesh axis names.

    Returns
    -------
    bool
        True when every axis of ``axis`` has ``AxisType.Explicit``.
    """
    names = (axis,) if isinstance(axis, str) else axis
    types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
    return all(types[n] == AxisType.Explicit for n in names)


def _place(tree: Any, mesh: Mesh, axis: AxisName, specs: Any) -> Any:
    """Reshard ``tree`` to ``specs`` on a mesh whose ``axis`` is ``Explicit`` (``shard_map`` needs it there).

    On ``Auto`` axes ``shard_map`` reshards its inputs itself.
    """
    if not is_explicit(mesh, axis):
        return tree
    return jax.tree.map(lambda x, spec: jax.reshard(x, NamedSharding(mesh, spec)), tree, specs)


def shard_ginger_state(state: GingerState, mesh: Mesh, axis: AxisName) -> GingerState:
    """Place a Ginger state on a mesh, ``U`` split along its rows (see :func:`ginger_sharding`).

    Parameters
    ----------
    state : GingerState
        A state of JAX arrays, on any devices.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the rows of ``U``.

    Returns
    -------
    GingerState
        The same values, sharded.

    Raises
    ------
    ValueError
        If ``dim`` is not a multiple of the number of devices along ``axis``.
    """
    _check_jax_state(state, check_ginger_state, "basis")
    _check_dim(state.basis.shape[0], mesh, axis, "state.basis")
    return jax.device_put(state, ginger_sharding(mesh, axis))


def shard_qng_state(state: QNGState, mesh: Mesh, axis: AxisName) -> QNGState:
    """Place a QNG state on a mesh, the factors split along ``dim`` (see :func:`qng_sharding`).

    Parameters
    ----------
    state : QNGState
        A state of JAX arrays, on any devices.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the ``dim`` columns of the factors.

    Returns
    -------
    QNGState
        The same values, sharded.

    Raises
    ------
    ValueError
        If ``dim`` is not a multiple of the number of devices along ``axis``.
    """
    _check_jax_state(state, check_qng_state, "factors")
    _check_dim(state.factors.shape[1], mesh, axis, "state.factors")
    return jax.device_put(state, qng_sharding(mesh, axis))


def _check_jax_state(state: Any, check: Callable[[Any], Any], field: str) -> None:
    check(state)
    if not isinstance(getattr(state, field), jax.Array):
        msg = f"state.{field} must be a JAX array, got {type(getattr(state, field)).__name__}"
        raise TypeError(msg)


# -- Creation --------------------------------------------------------------------


def ginger_init(dim: int, rank: int, *, mesh: Mesh, axis: AxisName, dtype: DType | None = None) -> GingerState:
    """Create an empty Ginger state directly in its sharded layout.

    The same state as :func:`lowrank_ggn.ginger_init` (the first ``rank``
    columns of the identity, σ = 0), but each device computes only its own rows
    of ``U``: the full ``dim × rank`` array is never formed on one device.

    Parameters
    ----------
    dim : int
        Number of parameters d, a multiple of the number of devices along ``axis``.
    rank : int
        τ, with ``1 ≤ rank < dim``.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the rows of ``U``.
    dtype : dtype, optional
        ``jnp.float32`` or ``jnp.float64`` (the latter needs ``jax_enable_x64``).
        Default: JAX's default floating dtype.

    Returns
    -------
    GingerState
        Sharded as :func:`ginger_sharding` says.

    Raises
    ------
    ValueError
        If ``rank`` is not in ``[1, dim)`` or ``dim`` is not a multiple of the
        number of devices along ``axis``.
    TypeError
        If ``dtype`` is not float32 or float64.
    """
    jax.eval_shape(lambda: ginger_init_local(dim, rank, xp=jnp, dtype=dtype))  # checks dim, rank, dtype
    _check_dim(dim, mesh, axis, "dim")
    make = jax.jit(lambda: ginger_init_local(dim, rank, xp=jnp, dtype=dtype), out_shardings=ginger_sharding(mesh, axis))
    return make()


def qng_init(dim: int, rank: int, *, mesh: Mesh, axis: AxisName, dtype: DType | None = None) -> QNGState:
    """Create a QNG state with an empty window, directly in its sharded layout.

    Parameters
    ----------
    dim : int
        Number of parameters d, a multiple of the number of devices along ``axis``.
    rank : int
        Window length τ, with ``1 ≤ rank < dim``.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the ``dim`` columns of the factors.
    dtype : dtype, optional
        ``jnp.float32`` or ``jnp.float64``. Default: JAX's default floating dtype.

    Returns
    -------
    QNGState
        Sharded as :func:`qng_sharding` says.

    Raises
    ------
    ValueError
        If ``rank`` is not in ``[1, dim)`` or ``dim`` is not a multiple of the
        number of devices along ``axis``.
    TypeError
        If ``dtype`` is not float32 or float64.
    """
    jax.eval_shape(lambda: qng_init_local(dim, rank, xp=jnp, dtype=dtype))  # checks dim, rank, dtype
    _check_dim(dim, mesh, axis, "dim")
    make = jax.jit(lambda: qng_init_local(dim, rank, xp=jnp, dtype=dtype), out_shardings=qng_sharding(mesh, axis))
    return make()


# -- Steps -----------------------------------------------------------------------


def _psum(axis: AxisName) -> AllReduce:
    """Reductions completed by collectives over ``axis`` (inside ``shard_map``)."""

    def total(x: Array) -> Array:
        return jax.lax.psum(x, axis)

    def all_true(x: Array) -> Array:
        return jax.lax.psum(jnp.logical_not(x).astype(jnp.int32), axis) == 0

    def largest(x: Array) -> Array:
        return jax.lax.pmax(x, axis)

    return AllReduce(total, all_true, largest)


def _scalar_arg(value: Any, like: Array) -> Array:
    """Return a decay or damping as a replicated 0-d array (it may be traced)."""
    return jnp.asarray(value, dtype=like.dtype)


def ginger_update(
    state: GingerState,
    d: Array,
    *,
    decay: Any,
    mesh: Mesh,
    axis: AxisName,
    reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
) -> GingerState:
    r"""Fold one curvature vector into a sharded Ginger state (Eq 7, truncated to rank τ).

    The eigen path of :func:`lowrank_ggn.ginger_update`: the best rank-τ
    approximation of

    .. math:: \alpha\, U \operatorname{diag}(\sigma) U^\top + (1 - \alpha)\, d d^\top ,

    computed with ``U`` and ``d`` split along ``dim``. Each device reads and
    rewrites only its rows of ``U``; the reductions ``max|dᵢ|``, ``Uᵀd``,
    ``‖d‖`` and ``‖d − Uc‖`` (and ``Uᵀp̃`` when a second Gram–Schmidt pass is needed) are
    all-reduces of at most τ numbers, and the (τ+1)×(τ+1) eigenproblem is
    solved, identically, on every device.

    Parameters
    ----------
    state : GingerState
        Sharded as :func:`ginger_sharding` says.
    d : array, shape (dim,)
        Curvature vector (Eq 8), sharded as ``PartitionSpec(axis)`` (another
        layout is resharded on entry).
    decay : float or 0-d array
        α ∈ (0, 1); may be traced.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits ``dim``.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update` (here from the Gram matrix
        ``UᵀU``, one all-reduce of τ×τ numbers).

    Returns
    -------
    GingerState
        The updated state, sharded like the input. A non-finite ``d`` (on any
        device) leaves it unchanged except ``num_nonfinite``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), ``reorthonormalize_every < 1``, a shape is wrong
        or ``dim`` is not a multiple of the number of devices along ``axis``.
    TypeError
        If the state or ``d`` are not JAX arrays of one real floating dtype.
    """
    _check_jax_state(state, check_ginger_state, "basis")
    basis = state.basis
    check_like(d, "d", basis, shapes=((basis.shape[0],),))
    check_decay(decay, like=basis)
    _check_dim(basis.shape[0], mesh, axis, "state.basis")
    every = resolve_reorthonormalize_every(jnp, basis.dtype, reorthonormalize_every)
    reduce = _psum(axis)

    def local(state: GingerState, d: Array, alpha: Array) -> GingerState:
        return core_ginger.update(
            jnp,
            state,
            d,
            decay=alpha,
            reorthonormalize_every=every,
            reduce=reduce,
        )

    in_specs = (_ginger_specs(axis), P(axis), P())
    step = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=in_specs[0])
    return step(*_place((state, d, _scalar_arg(decay, basis)), mesh, axis, in_specs))


def ginger_precondition(state: GingerState, g: Array, *, damping: Any, mesh: Mesh, axis: AxisName) -> Array:
    r"""Apply the inverse of the damped curvature with ``U`` sharded (Eq 15–16).

    .. math::
       (\gamma I + U\operatorname{diag}(\sigma)U^\top)^{-1} g
       = U\,\frac{c}{\gamma + \sigma} + \frac{g - U c}{\gamma},
       \qquad c = U^\top g = \sum_k U_k^\top g_k ,

    one all-reduce of ``c`` (τ numbers per column of ``g``); the rest is
    row-local.

    Parameters
    ----------
    state : GingerState
        Sharded as :func:`ginger_sharding` says.
    g : array, shape (dim,) or (dim, k)
        Gradient(s), sharded along ``dim`` like the rows of ``U``.
    damping : float or 0-d array
        γ > 0; may be traced.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits ``dim``.

    Returns
    -------
    array, same shape as ``g``
        ``(γI + U diag(σ) Uᵀ)⁻¹ g``, sharded along ``dim``.

    Raises
    ------
    ValueError
        If ``damping`` is not positive and finite, a shape is wrong or ``dim``
        is not a multiple of the number of devices along ``axis``.
    TypeError
        If the state or ``g`` are not JAX arrays of one real floating dtype.
    """
    _check_jax_state(state, check_ginger_state, "basis")
    basis = state.basis
    check_like(g, "g", basis, shapes=((basis.shape[0],), (basis.shape[0], -1)))
    check_damping(damping)
    _check_dim(basis.shape[0], mesh, axis, "state.basis")
    reduce = _psum(axis)

    def local(basis: Array, eigvals: Array, g: Array, gamma: Array) -> Array:
        return core_operator.solve(jnp, basis, eigvals, g, gamma, reduce=reduce)

    in_specs = (P(axis, None), P(), _vector_spec(g, axis), P())
    solve = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=in_specs[2])
    return solve(*_place((basis, state.eigvals, g, _scalar_arg(damping, basis)), mesh, axis, in_specs))


def ginger_reorthonormalize(state: GingerState, *, mesh: Mesh, axis: AxisName) -> GingerState:
    r"""Re-orthonormalise a sharded basis without changing the represented matrix.

    With ``G = UᵀU = Σ_k U_kᵀU_k`` (one all-reduce of τ² numbers) and
    ``G = Z diag(g) Zᵀ``, the basis ``U G^{-1/2}`` is orthonormal and
    represents the same matrix with the core ``G^{1/2} Σ G^{1/2} = W diag(μ) Wᵀ``;
    the new state is ``U' = U (G^{-1/2} W)``, ``σ' = μ``, a row-local product.
    A QR factorisation, as :func:`lowrank_ggn.ginger_reorthonormalize` uses,
    would need all of ``U`` on one device. The result is orthonormal to a few
    units of the working precision.

    Parameters
    ----------
    state : GingerState
        Sharded as :func:`ginger_sharding` says.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits ``dim``.

    Returns
    -------
    GingerState
        Same ``step``, ``discarded``, ``escaped`` and ``num_nonfinite``; sharded like the input.
    """
    _check_jax_state(state, check_ginger_state, "basis")
    _check_dim(state.basis.shape[0], mesh, axis, "state.basis")
    reduce = _psum(axis)
    specs = _ginger_specs(axis)
    fn = jax.shard_map(
        lambda s: core_ginger.reorthonormalize(jnp, s, reduce), mesh=mesh, in_specs=(specs,), out_specs=specs
    )
    return fn(_place(state, mesh, axis, specs))


def qng_update(state: QNGState, d: Array, *, decay: Any, mesh: Mesh, axis: AxisName) -> QNGState:
    r"""Append the factor of a new curvature vector to a sharded QNG state.

    As :func:`lowrank_ggn.qng_update`: ``q = Â⁻¹ d``, ``β`` from ``‖q‖²`` and
    ``K = √α I + β q qᵀ``. ``q`` is computed row-locally, factor by factor,
    each factor needing one all-reduce of the scalar ``q_iᵀv``; ``‖q‖²`` is one
    more. The new factor stays sharded along ``dim``.

    Parameters
    ----------
    state : QNGState
        Sharded as :func:`qng_sharding` says.
    d : array, shape (dim,)
        Curvature vector (Eq 8), sharded as ``PartitionSpec(axis)``.
    decay : float or 0-d array
        α ∈ (0, 1); may be traced.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits ``dim``.

    Returns
    -------
    QNGState
        The updated state, sharded like the input. A non-finite ``d`` leaves
        it unchanged except ``num_nonfinite``.

    Raises
    ------
    ValueError
        If ``decay`` ∉ (0, 1), a shape is wrong or ``dim`` is not a multiple of
        the number of devices along ``axis``.
    TypeError
        If the state or ``d`` are not JAX arrays of one real floating dtype.
    """
    _check_jax_state(state, check_qng_state, "factors")
    factors = state.factors
    check_like(d, "d", factors, shapes=((factors.shape[1],),))
    check_decay(decay, like=factors)
    core_qng.check_decay_range(jnp, decay, factors)
    _check_dim(factors.shape[1], mesh, axis, "state.factors")
    reduce = _psum(axis)

    def local(state: QNGState, d: Array, alpha: Array) -> QNGState:
        return core_qng.update(jnp, state, d, decay=alpha, reduce=reduce)

    in_specs = (_qng_specs(axis), P(axis), P())
    step = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=in_specs[0])
    return step(*_place((state, d, _scalar_arg(decay, factors)), mesh, axis, in_specs))


def qng_precondition(state: QNGState, g: Array, *, mesh: Mesh, axis: AxisName) -> Array:
    r"""Apply ``(ÂÂᵀ)⁻¹ g = Â⁻ᵀ Â⁻¹ g`` with the factors sharded along ``dim``.

    2τ factor solves, each a row-local update of ``g`` after one all-reduce
    of ``q_iᵀv`` (one number per column of ``g``).

    Parameters
    ----------
    state : QNGState
        Sharded as :func:`qng_sharding` says.
    g : array, shape (dim,) or (dim, k)
        Gradient(s), sharded along ``dim``.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits ``dim``.

    Returns
    -------
    array, same shape as ``g``
        ``(ÂÂᵀ)⁻¹ g``, sharded along ``dim``.

    Raises
    ------
    ValueError
        If a shape is wrong or ``dim`` is not a multiple of the number of
        devices along ``axis``.
    TypeError
        If the state or ``g`` are not JAX arrays of one real floating dtype.
    """
    _check_jax_state(state, check_qng_state, "factors")
    factors = state.factors
    dim = factors.shape[1]
    check_like(g, "g", factors, shapes=((dim,), (dim, -1)))
    _check_dim(dim, mesh, axis, "state.factors")
    reduce = _psum(axis)

    def local(state: QNGState, g: Array) -> Array:
        half = core_qng.factor_product(state, g, inverse=True, transpose=False, reduce=reduce)
        return core_qng.factor_product(state, half, inverse=True, transpose=True, reduce=reduce)

    in_specs = (_qng_specs(axis), _vector_spec(g, axis))
    solve = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=in_specs[1])
    return solve(*_place((state, g), mesh, axis, in_specs))


# -- Blocks of parameter arrays (for the optimiser front-ends) -----------------------------


def splittable(shape: tuple[int, ...], mesh: Mesh, axis: AxisName) -> bool:
    """Return whether an array of ``shape`` can be split along its first axis over ``axis``.

    Parameters
    ----------
    shape : tuple of int
        The shape of a parameter array.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the parameters.

    Returns
    -------
    bool
        True when ``shape`` has at least one axis and its first axis is a
        positive multiple of the number of devices along ``axis``.
    """
    n = _axis_size(mesh, axis)
    return len(shape) >= 1 and shape[0] > 0 and shape[0] % n == 0


def _leading_spec(x: Array, axis: AxisName) -> P:
    return P(axis, *([None] * (x.ndim - 1)))


def _flatten_local(leaves: list[Array], dtype: DType) -> Array:
    """Return this device's rows of a block: its block of every leaf, raveled and concatenated."""
    return jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])


def _unflatten_local(vec: Array, like: list[Array]) -> list[Array]:
    out, start = [], 0
    for x in like:
        out.append(jnp.reshape(vec[start : start + x.size], x.shape).astype(x.dtype))
        start += x.size
    return out


def _in_layout_of(ys: list[Array], like: list[Array], mesh: Mesh, axis: AxisName) -> list[Array]:
    """On an ``Explicit`` mesh, reshard each result to the layout of the corresponding input."""
    if not is_explicit(mesh, axis):
        return ys
    return [jax.reshard(y, jax.typeof(x).sharding) for y, x in zip(ys, like, strict=True)]


def _check_leaves(leaves: Any, name: str, dim: int, mesh: Mesh, axis: AxisName) -> list[Array]:
    """Check a block given as arrays: real floating JAX arrays, each splittable, ``dim`` numbers in all."""
    if not isinstance(leaves, list | tuple) or not leaves:
        msg = f"{name} must be a non-empty list of arrays, got {type(leaves).__name__}"
        raise TypeError(msg)
    for k, x in enumerate(leaves):
        if not isinstance(x, jax.Array) or not jnp.issubdtype(x.dtype, jnp.floating):
            msg = f"{name}[{k}] must be a real floating JAX array, got {type(x).__name__}"
            raise TypeError(msg)
        if not splittable(tuple(x.shape), mesh, axis):
            msg = (
                f"{name}[{k}] has shape {tuple(x.shape)}: its first axis must be a positive multiple of the "
                f"{_axis_size(mesh, axis)} devices along axis {axis!r}"
            )
            raise ValueError(msg)
    total = sum(int(x.size) for x in leaves)
    if total != dim:
        msg = f"{name} holds {total} numbers but the state has dim = {dim}"
        raise ValueError(msg)
    return list(leaves)


def ginger_update_leaves(
    state: GingerState,
    d_leaves: list[Array],
    *,
    decay: Any,
    mesh: Mesh,
    axis: AxisName,
    reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
) -> GingerState:
    r"""Fold a curvature vector given as parameter-shaped arrays into a sharded Ginger state.

    The block's vector is the arrays split along their first axis over
    ``axis``; each device ravels and concatenates its own blocks of the arrays,
    so no array is moved. The rows of ``U`` are in that order: the whole
    vector is the concatenation, over devices, of each device's blocks. For a
    single array this is the order of ``jnp.ravel``; for several, the state
    depends on the number of devices.

    Parameters
    ----------
    state : GingerState
        Sharded as :func:`ginger_sharding` says, ``dim`` the total size of the arrays.
    d_leaves : list of arrays
        The curvature vector, as arrays whose first axis is a multiple of the
        number of devices along ``axis`` (see :func:`splittable`).
    decay : float or 0-d array
        α ∈ (0, 1); may be traced.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the arrays.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`ginger_update`.

    Returns
    -------
    GingerState
        The updated state, sharded like the input.

    Raises
    ------
    ValueError
        If an array's first axis is not a multiple of the number of devices
        along ``axis``, or the arrays do not hold ``dim`` numbers in all.
    TypeError
        If an array is not a real floating JAX array.
    """
    _check_jax_state(state, check_ginger_state, "basis")
    d_leaves = _check_leaves(d_leaves, "d_leaves", state.basis.shape[0], mesh, axis)
    check_decay(decay, like=state.basis)
    dtype = state.basis.dtype
    every = resolve_reorthonormalize_every(jnp, dtype, reorthonormalize_every)
    reduce = _psum(axis)

    def local(state: GingerState, leaves: list[Array], alpha: Array) -> GingerState:
        d = _flatten_local(leaves, dtype)
        return core_ginger.update(
            jnp,
            state,
            d,
            decay=alpha,
            reorthonormalize_every=every,
            reduce=reduce,
        )

    in_specs = (_ginger_specs(axis), [_leading_spec(x, axis) for x in d_leaves], P())
    step = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=in_specs[0])
    return step(*_place((state, d_leaves, _scalar_arg(decay, state.basis)), mesh, axis, in_specs))


def ginger_precondition_leaves(
    state: GingerState, g_leaves: list[Array], *, damping: Any, mesh: Mesh, axis: AxisName
) -> list[Array]:
    r"""Precondition a gradient given as parameter-shaped arrays with a sharded Ginger state.

    The arrays are laid out as in :func:`ginger_update_leaves`; the results
    have the shapes, dtypes and (on an ``Explicit`` mesh) the layouts of
    ``g_leaves``.

    Parameters
    ----------
    state : GingerState
        Sharded as :func:`ginger_sharding` says.
    g_leaves : list of arrays
        The gradient, as arrays split along their first axis.
    damping : float or 0-d array
        γ > 0; may be traced.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the arrays.

    Returns
    -------
    list of arrays
        ``(γI + U diag(σ) Uᵀ)⁻¹ g``, as arrays like ``g_leaves``.

    Raises
    ------
    ValueError
        If an array's first axis is not a multiple of the number of devices
        along ``axis``, or the arrays do not hold ``dim`` numbers in all.
    TypeError
        If an array is not a real floating JAX array.
    """
    _check_jax_state(state, check_ginger_state, "basis")
    g_leaves = _check_leaves(g_leaves, "g_leaves", state.basis.shape[0], mesh, axis)
    check_damping(damping)
    dtype = state.basis.dtype
    reduce = _psum(axis)

    def local(basis: Array, eigvals: Array, leaves: list[Array], gamma: Array) -> list[Array]:
        y = core_operator.solve(jnp, basis, eigvals, _flatten_local(leaves, dtype), gamma, reduce=reduce)
        return _unflatten_local(y, leaves)

    specs = [_leading_spec(x, axis) for x in g_leaves]
    in_specs = (P(axis, None), P(), specs, P())
    solve = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=specs)
    args = (state.basis, state.eigvals, g_leaves, _scalar_arg(damping, state.basis))
    return _in_layout_of(solve(*_place(args, mesh, axis, in_specs)), g_leaves, mesh, axis)


def qng_update_leaves(state: QNGState, d_leaves: list[Array], *, decay: Any, mesh: Mesh, axis: AxisName) -> QNGState:
    r"""Append the factor of a curvature vector given as parameter-shaped arrays to a sharded QNG state.

    The arrays are laid out as in :func:`ginger_update_leaves`.

    Parameters
    ----------
    state : QNGState
        Sharded as :func:`qng_sharding` says.
    d_leaves : list of arrays
        The curvature vector, as arrays split along their first axis.
    decay : float or 0-d array
        α ∈ (0, 1); may be traced.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the arrays.

    Returns
    -------
    QNGState
        The updated state, sharded like the input.

    Raises
    ------
    ValueError
        If an array's first axis is not a multiple of the number of devices
        along ``axis``, or the arrays do not hold ``dim`` numbers in all.
    TypeError
        If an array is not a real floating JAX array.
    """
    _check_jax_state(state, check_qng_state, "factors")
    d_leaves = _check_leaves(d_leaves, "d_leaves", state.factors.shape[1], mesh, axis)
    check_decay(decay, like=state.factors)
    core_qng.check_decay_range(jnp, decay, state.factors)
    dtype = state.factors.dtype
    reduce = _psum(axis)

    def local(state: QNGState, leaves: list[Array], alpha: Array) -> QNGState:
        return core_qng.update(jnp, state, _flatten_local(leaves, dtype), decay=alpha, reduce=reduce)

    in_specs = (_qng_specs(axis), [_leading_spec(x, axis) for x in d_leaves], P())
    step = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=in_specs[0])
    return step(*_place((state, d_leaves, _scalar_arg(decay, state.factors)), mesh, axis, in_specs))


def qng_precondition_leaves(state: QNGState, g_leaves: list[Array], *, mesh: Mesh, axis: AxisName) -> list[Array]:
    r"""Apply ``(ÂÂᵀ)⁻¹`` to a gradient given as parameter-shaped arrays, with a sharded QNG state.

    Parameters
    ----------
    state : QNGState
        Sharded as :func:`qng_sharding` says.
    g_leaves : list of arrays
        The gradient, as arrays split along their first axis.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the arrays.

    Returns
    -------
    list of arrays
        ``(ÂÂᵀ)⁻¹ g``, as arrays like ``g_leaves``.

    Raises
    ------
    ValueError
        If an array's first axis is not a multiple of the number of devices
        along ``axis``, or the arrays do not hold ``dim`` numbers in all.
    TypeError
        If an array is not a real floating JAX array.
    """
    _check_jax_state(state, check_qng_state, "factors")
    g_leaves = _check_leaves(g_leaves, "g_leaves", state.factors.shape[1], mesh, axis)
    dtype = state.factors.dtype
    reduce = _psum(axis)

    def local(state: QNGState, leaves: list[Array]) -> list[Array]:
        g = _flatten_local(leaves, dtype)
        half = core_qng.factor_product(state, g, inverse=True, transpose=False, reduce=reduce)
        return _unflatten_local(
            core_qng.factor_product(state, half, inverse=True, transpose=True, reduce=reduce), leaves
        )

    specs = [_leading_spec(x, axis) for x in g_leaves]
    in_specs = (_qng_specs(axis), specs)
    solve = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=specs)
    return _in_layout_of(solve(*_place((state, g_leaves), mesh, axis, in_specs)), g_leaves, mesh, axis)


# -- Generic over the approximation protocol ---------------------------------------


def state_sharding(approximation: Any, mesh: Mesh, axis: AxisName) -> Any:
    """The sharding of a state of ``approximation`` with its long axis split over ``axis``.

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger or lowrank_ggn.QNG
        An approximation whose ``shardable`` attribute is true.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the long axis.

    Returns
    -------
    NamedTuple of NamedSharding
        One sharding per field of the state.

    Raises
    ------
    ValueError
        If the approximation cannot be split across devices (the product form).
    """
    kind = _kind(approximation)
    return ginger_sharding(mesh, axis) if kind == "ginger" else qng_sharding(mesh, axis)


def _kind(approximation: Any) -> str:
    if not getattr(approximation, "shardable", False) or approximation.state_type not in (GingerState, QNGState):
        name = getattr(approximation, "name", type(approximation).__name__)
        msg = f"approximation {name!r} cannot be split across devices; use lg.ginger or lg.qng"
        raise ValueError(msg)
    return "ginger" if approximation.state_type is GingerState else "qng"


def _specs_of(approximation: Any, axis: AxisName) -> Any:
    return _ginger_specs(axis) if _kind(approximation) == "ginger" else _qng_specs(axis)


def _long_field(state: Any) -> Array:
    return state.basis if isinstance(state, GingerState) or hasattr(state, "basis") else state.factors


def init(approximation: Any, dim: int, *, mesh: Mesh, axis: AxisName, dtype: DType | None = None) -> Any:
    """Create an empty state of ``approximation`` directly in its sharded layout.

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger or lowrank_ggn.QNG
        What to keep (``lg.ginger(...)`` or ``lg.qng(...)``).
    dim : int
        The number of parameters; a multiple of the number of devices along ``axis``.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the parameters.
    dtype : dtype, optional
        ``jnp.float32`` or ``jnp.float64``.

    Returns
    -------
    GingerState or QNGState
        Sharded as :func:`state_sharding` says.
    """
    if _kind(approximation) == "ginger":
        return ginger_init(dim, approximation.rank, mesh=mesh, axis=axis, dtype=dtype)
    return qng_init(dim, approximation.rank, mesh=mesh, axis=axis, dtype=dtype)


def update_precondition_leaves(
    approximation: Any,
    state: Any,
    d_leaves: list[Array],
    g_leaves: list[Array],
    *,
    damping: Any,
    mesh: Mesh,
    axis: AxisName,
) -> tuple[Any, list[Array]]:
    r"""One fused step of any shardable approximation on a block given as parameter-shaped arrays.

    Folds the curvature vector ``d`` into the sharded state and preconditions
    ``g`` with the new state, each device working on its own rows (its blocks
    of the arrays, laid out as in :func:`ginger_update_leaves`); the sums over
    rows are completed by ``lax.psum`` (O(τ) numbers per step for Ginger).

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger or lowrank_ggn.QNG
        The method and its hyper-parameters.
    state : GingerState or QNGState
        Sharded as :func:`state_sharding` says.
    d_leaves, g_leaves : list of arrays
        The curvature vector and the gradient, as arrays split along their
        first axis.
    damping : float, 0-d array or None
        γ > 0 (may be traced); ``None`` for QNG.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the arrays.

    Returns
    -------
    tuple
        ``(new_state, y_leaves)``, the preconditioned gradient as arrays like ``g_leaves``.

    Raises
    ------
    ValueError, TypeError
        As :func:`ginger_update_leaves` and :func:`ginger_precondition_leaves`.
    """
    specs = _specs_of(approximation, axis)
    long = _long_field(state)
    dim = long.shape[0] if _kind(approximation) == "ginger" else long.shape[1]
    d_leaves = _check_leaves(d_leaves, "d_leaves", dim, mesh, axis)
    g_leaves = _check_leaves(g_leaves, "g_leaves", dim, mesh, axis)
    if approximation.needs_damping:
        check_damping(damping)
    dtype = long.dtype
    reduce = _psum(axis)

    def local(state: Any, ds: list[Array], gs: list[Array], gamma: Array) -> tuple[Any, list[Array]]:
        d, g = _flatten_local(ds, dtype), _flatten_local(gs, dtype)
        new, y = approximation.fold_precondition(jnp, state, d, g, damping=gamma, reduce=reduce)
        return new, _unflatten_local(y, gs)

    d_specs = [_leading_spec(x, axis) for x in d_leaves]
    g_specs = [_leading_spec(x, axis) for x in g_leaves]
    in_specs = (specs, d_specs, g_specs, P())
    step = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=(specs, g_specs))
    gamma = _scalar_arg(1.0 if damping is None else damping, long)
    new, ys = step(*_place((state, d_leaves, g_leaves, gamma), mesh, axis, in_specs))
    return new, _in_layout_of(ys, g_leaves, mesh, axis)


def precondition_leaves(
    approximation: Any, state: Any, g_leaves: list[Array], *, damping: Any, mesh: Mesh, axis: AxisName
) -> list[Array]:
    """Precondition a gradient given as parameter-shaped arrays with any shardable approximation's state.

    The layout is that of :func:`update_precondition_leaves`.

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger or lowrank_ggn.QNG
        The method.
    state : GingerState or QNGState
        Sharded as :func:`state_sharding` says.
    g_leaves : list of arrays
        The gradient, as arrays split along their first axis.
    damping : float, 0-d array or None
        γ > 0 (may be traced); ``None`` for QNG.
    mesh : jax.sharding.Mesh
        The device mesh.
    axis : str or tuple of str
        The mesh axis (or axes) that splits the arrays.

    Returns
    -------
    list of arrays
        The preconditioned gradient, as arrays like ``g_leaves``.
    """
    specs = _specs_of(approximation, axis)
    long = _long_field(state)
    dim = long.shape[0] if _kind(approximation) == "ginger" else long.shape[1]
    g_leaves = _check_leaves(g_leaves, "g_leaves", dim, mesh, axis)
    if approximation.needs_damping:
        check_damping(damping)
    dtype = long.dtype
    reduce = _psum(axis)

    def local(state: Any, gs: list[Array], gamma: Array) -> list[Array]:
        y = approximation.solve(jnp, state, _flatten_local(gs, dtype), damping=gamma, reduce=reduce)
        return _unflatten_local(y, gs)

    g_specs = [_leading_spec(x, axis) for x in g_leaves]
    in_specs = (specs, g_specs, P())
    solve = jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=g_specs)
    gamma = _scalar_arg(1.0 if damping is None else damping, long)
    return _in_layout_of(solve(*_place((state, g_leaves, gamma), mesh, axis, in_specs)), g_leaves, mesh, axis)
