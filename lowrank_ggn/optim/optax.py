r"""Ginger and QNG as optax gradient transformations.

:func:`scale_by_ginger` and :func:`scale_by_qng` replace the gradient by its
preconditioned version; :func:`ginger` and :func:`qng` chain them with momentum,
decoupled weight decay and the learning rate, like ``optax.adamw``.

The curvature vector ``d_t`` (Eq 8) is an extra argument of ``update``::

    updates, state = tx.update(grads, state, params, curvature=d)

with ``d`` a pytree of the structure of ``grads`` (see
:mod:`lowrank_ggn.optim.jax_likelihoods` to compute it). Without it the
gradient itself is used, which gives the *empirical* Fisher instead of the
Fisher/GGN; see :mod:`lowrank_ggn.optim` for the difference.

State layout: :class:`ScaleByGingerState` holds a step ``count`` and a tuple
``blocks`` with one :class:`lowrank_ggn.GingerState` per block (``None`` for a
block of a single scalar), in the order of :func:`block_partition`. Each block
state is a NamedTuple of arrays whose first axis is the flattened block, the
natural axis for ``jax.sharding.NamedSharding``. The states are pytrees, so
they checkpoint like any optax state.

Everything is pure and runs under ``jax.jit``; the options (rank, decay,
blocking, update period) are static, the damping may be a schedule of the step
count.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

import lowrank_ggn as lg
from lowrank_ggn._core.checks import check_approximation, check_damping
from lowrank_ggn.optim._options import (
    DEFAULT_DAMPING,
    DEFAULT_DECAY,
    DEFAULT_MOMENTUM,
    DEFAULT_RANK,
    DEFAULT_REORTHONORMALIZE_EVERY,
    block_rank,
    check_common,
    check_damping_or_schedule,
    check_nonnegative,
)
from lowrank_ggn.optim._sharded import Placement, check_placement, gathered, init_state, split
from lowrank_ggn.optim._sharded import step as sharded_step
from lowrank_ggn.optim.damping import DampingPolicy

__all__ = [
    "LowRankPaperState",
    "ScaleByGingerState",
    "ScaleByLowRankPolicyState",
    "ScaleByLowRankState",
    "ScaleByQNGState",
    "block_partition",
    "ginger",
    "ginger_paper",
    "lowrank_paper",
    "qng",
    "scale_by_ginger",
    "scale_by_lowrank",
    "scale_by_qng",
]

Blocks = str | Callable[[Any], Any] | Any
"""``"model"``, ``"leaf"``, a pytree of hashable labels, or a callable ``params -> labels``."""


class ScaleByLowRankState(NamedTuple):
    """State of :func:`scale_by_lowrank`: a step counter and one approximation state per block.

    A NamedTuple of arrays, hence a pytree: it goes through ``jax.jit``,
    ``jax.device_put`` and any pytree checkpointer like the states of optax's
    own transformations.

    Parameters
    ----------
    count : jax.Array
        The step counter (see the attribute below).
    blocks : tuple
        The per-block states (see the attribute below).
    """

    count: jax.Array  # type: ignore[assignment]  # optax's name for the step counter
    """0-d int32: number of ``update`` calls (drives ``update_every`` and damping schedules).

    It saturates instead of wrapping: after ``2³¹ − 1`` calls it cycles through the
    last ``update_every`` values below ``2³¹``, which keeps the period of ``update_every``."""
    blocks: tuple[Any, ...]
    """One approximation state per block, in the order of :func:`block_partition`; ``None`` for scalar blocks."""


ScaleByGingerState = ScaleByLowRankState
"""The state of :func:`scale_by_ginger`: the generic :class:`ScaleByLowRankState`.

Parameters
----------
count : jax.Array
    The step counter.
blocks : tuple
    One :class:`lowrank_ggn.GingerState` per block (``None`` for scalar blocks).
"""
ScaleByQNGState = ScaleByLowRankState
"""The state of :func:`scale_by_qng`: the generic :class:`ScaleByLowRankState`.

Parameters
----------
count : jax.Array
    The step counter.
blocks : tuple
    One :class:`lowrank_ggn.QNGState` per block (``None`` for scalar blocks).
"""


def block_partition(tree: Any, blocks: Blocks = "leaf") -> list[list[int]]:
    """Split the leaves of a parameter pytree into blocks.

    Parameters
    ----------
    tree : pytree
        Parameters (or gradients, same structure).
    blocks : {"leaf", "model"}, pytree or callable
        ``"leaf"``: one block per parameter array (the paper's choice);
        ``"model"``: the whole model as one vector; a pytree with the structure
        of ``tree`` whose leaves are hashable labels (leaves with equal labels
        form one block, as the labels of ``optax.multi_transform``); or a callable
        returning such a pytree from ``tree``.

    Returns
    -------
    list of list of int
        For each block, the indices (in ``jax.tree.leaves(tree)`` order) of its
        leaves. Blocks are ordered by their first leaf.

    Raises
    ------
    ValueError
        If ``blocks`` is an unknown string or the labels do not match ``tree``.
    TypeError
        If a label is not hashable.
    """
    leaves = jax.tree.leaves(tree)
    n = len(leaves)
    if isinstance(blocks, str):
        if blocks == "leaf":
            return [[i] for i in range(n)]
        if blocks == "model":
            return [list(range(n))] if n else []
        msg = f"blocks must be 'leaf', 'model', a pytree of labels or a callable, got {blocks!r}"
        raise ValueError(msg)
    labels_tree = blocks(tree) if callable(blocks) else blocks
    treedef = jax.tree.structure(tree)
    try:
        labels = treedef.flatten_up_to(labels_tree)  # type: ignore[attr-defined]
    except (ValueError, TypeError) as err:
        msg = f"blocks: the labels pytree does not match the structure of the parameters ({err})"
        raise ValueError(msg) from err
    order: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        if not isinstance(label, Hashable):
            msg = f"blocks: labels must be hashable, got {type(label).__name__}"
            raise TypeError(msg)
        order.setdefault(label, []).append(i)
    return list(order.values())


def _check_blocks(blocks: Blocks) -> None:
    if isinstance(blocks, str) and blocks not in ("leaf", "model"):
        msg = f"blocks must be 'leaf', 'model', a pytree of labels or a callable, got {blocks!r}"
        raise ValueError(msg)


def _check_real_floating(tree: Any, what: str, curvature: Any = None) -> None:
    """Refuse any leaf of ``tree`` that is not real floating, naming its path.

    ``curvature``, when given, is checked as well. Integer leaves (counters,
    indices, ...) are neither preconditioned nor cast: a block mixing them with floating leaves would round them through
    the float state. Keep them out of the optimised pytree (or mask them with
    ``optax.masked``).
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            msg = (
                f"{what} leaf {jax.tree_util.keystr(path) or '<root>'} has dtype {dtype}; only real floating "
                "leaves can be preconditioned (keep integer and complex leaves out of the optimised pytree, "
                "e.g. with optax.masked)"
            )
            raise TypeError(msg)
    if curvature is not None:
        _check_real_floating(curvature, "curvature")


def _block_dtype(leaves: Sequence[Any], idx: Sequence[int], state_dtype: Any) -> Any:
    if state_dtype is not None:
        return state_dtype
    dtype = jnp.result_type(*[leaves[i].dtype for i in idx])
    return jnp.promote_types(dtype, jnp.float32)  # float16/bfloat16 blocks keep a float32 state


def _flatten_block(leaves: Sequence[Any], idx: Sequence[int], dtype: Any) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaves[i]).astype(dtype) for i in idx])


def _unflatten_block(vec: jax.Array, leaves: Sequence[Any], idx: Sequence[int], out: list[Any]) -> None:
    start = 0
    for i in idx:
        size = leaves[i].size
        out[i] = jnp.reshape(vec[start : start + size], leaves[i].shape).astype(leaves[i].dtype)
        start += size


def _curvature_leaves(updates: Any, curvature: Any) -> list[Any]:
    treedef = jax.tree.structure(updates)
    if curvature is None:
        return treedef.flatten_up_to(updates)  # type: ignore[attr-defined]
    try:
        c_leaves = treedef.flatten_up_to(curvature)  # type: ignore[attr-defined]
    except (ValueError, TypeError) as err:
        msg = f"curvature must have the pytree structure of the gradients ({err})"
        raise ValueError(msg) from err
    for c, g in zip(c_leaves, treedef.flatten_up_to(updates), strict=True):  # type: ignore[attr-defined]
        if jnp.shape(c) != jnp.shape(g):
            msg = f"curvature leaf of shape {jnp.shape(c)} does not match the gradient leaf of shape {jnp.shape(g)}"
            raise ValueError(msg)
    return c_leaves


def _init_blocks(
    params: Any,
    blocks: Blocks,
    approximation: Any,
    state_dtype: Any,
    *,
    placement: Placement | None = None,
) -> tuple:
    leaves = jax.tree.leaves(params)
    states: list[Any] = []
    for idx in block_partition(params, blocks):
        dim = sum(int(leaves[i].size) for i in idx)
        r = block_rank(dim, approximation.rank)
        dtype = _block_dtype(leaves, idx, state_dtype)
        if r < 1:
            states.append(None)
            continue
        approx = approximation if r == approximation.rank else approximation.with_rank(r)
        if placement is None:
            states.append(approx.init(dim, xp=jnp, dtype=dtype))
        else:
            is_split = split(placement, leaves, idx)
            states.append(init_state(placement, approx, is_split=is_split, dim=dim, dtype=dtype))
    return tuple(states)


def _partition_for_update(updates: Any, blocks: Blocks, n_states: int) -> list[list[int]]:
    partition = block_partition(updates, blocks)
    if len(partition) != n_states:
        msg = (
            f"the gradients form {len(partition)} blocks but the state holds {n_states}; "
            "was the state initialised with parameters of another structure?"
        )
        raise ValueError(msg)
    return partition


def scale_by_lowrank(
    approximation: Any,
    *,
    damping: float | Callable[[jax.Array], Any] | None = DEFAULT_DAMPING,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
    mesh: Any = None,
    axis: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient with any low-rank curvature approximation, block by block.

    For each block, with :math:`d_t` the curvature vector and :math:`g_t` the
    gradient (both flattened to the block), the approximation folds in
    :math:`d_t` and the gradient is preconditioned with the updated state,
    :math:`u_t = \tilde G_t^{-1} g_t` (Algorithm 1), in one fused step
    (``approximation.fold_precondition``) whenever an update is due.

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger, lowrank_ggn.GingerProduct or lowrank_ggn.QNG
        What to keep per block, e.g. ``lg.ginger(rank=4, decay=0.99)``; a block
        of ``dim`` parameters uses rank ``min(rank, dim − 1)``.
    damping : float, callable, DampingPolicy or None
        γ > 0, a schedule ``count -> γ``, or a policy of
        :mod:`lowrank_ggn.optim.damping` (then ``update`` also takes
        ``reduction_ratio=``, and the state is a
        :class:`ScaleByLowRankPolicyState`); ``None`` for an approximation
        whose damping is implicit (QNG).
    blocks : {"leaf", "model"}, pytree or callable
        How parameters are grouped into blocks, see :func:`block_partition`.
    update_every : int
        Fold a curvature vector into the state only on steps
        ``count % update_every == 0`` (the preconditioner is applied at every step).
    state_dtype : dtype, optional
        ``jnp.float32`` or ``jnp.float64``; default the block's parameters'
        dtype (at least float32).
    mesh : jax.sharding.Mesh, optional
        Split the states over this mesh along ``axis``: a block whose arrays
        all have a first axis that is a multiple of the number of devices gets
        a state sharded along ``dim`` (:mod:`lowrank_ggn.sharding`); other
        blocks keep a replicated state. Needs a shardable approximation.
    axis : str or tuple of str, optional
        The mesh axis (or axes) that splits the parameters; given with ``mesh``.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``update(updates, state, params=None, *, curvature=None)``; without
        ``curvature`` the gradient is the curvature vector (the empirical
        Fisher). A non-finite curvature block leaves that block's state
        unchanged and increments its ``num_nonfinite``.

    Raises
    ------
    ValueError, TypeError
        For an invalid option, naming it.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> import lowrank_ggn as lg
    >>> from lowrank_ggn.optim.optax import scale_by_lowrank
    >>> tx = scale_by_lowrank(lg.ginger(rank=2, decay=0.99), damping=0.1)
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({"w": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}, state, params)
    """
    check_approximation(approximation)
    check_common(rank=approximation.rank, decay=approximation.decay, update_every=update_every)
    # -- damping policies (lowrank_ggn.optim.damping): their own transformation, appended below --
    if isinstance(damping, DampingPolicy):
        return _scale_by_lowrank_policy(
            approximation, damping, blocks=blocks, update_every=update_every, state_dtype=state_dtype, mesh=mesh
        )
    if approximation.needs_damping:
        check_damping_or_schedule(damping)
    elif damping is not None:
        msg = f"damping must be None for {approximation.name!r}, whose damping is implicit"
        raise ValueError(msg)
    _check_blocks(blocks)
    placement = check_placement(mesh, axis)
    if placement is not None and not approximation.shardable:
        msg = f"approximation {approximation.name!r} cannot be split across devices (mesh=); use lg.ginger or lg.qng"
        raise ValueError(msg)

    def init_fn(params: Any) -> ScaleByLowRankState:
        _check_real_floating(params, "parameter")
        return ScaleByLowRankState(
            count=jnp.zeros([], jnp.int32),
            blocks=_init_blocks(params, blocks, approximation, state_dtype, placement=placement),
        )

    def update_impl(updates: Any, state: ScaleByLowRankState, curvature: Any) -> tuple[Any, ScaleByLowRankState]:
        leaves = jax.tree.leaves(updates)
        c_leaves = _curvature_leaves(updates, curvature)
        partition = _partition_for_update(updates, blocks, len(state.blocks))
        gamma = damping(state.count) if callable(damping) else damping
        due = state.count % update_every == 0
        out: list[Any] = [None] * len(leaves)
        new_blocks: list[Any] = []
        groups: dict[tuple[Any, Any], list[tuple[int, list[int], Any, jax.Array, jax.Array, Any]]] = {}
        for idx, block in zip(partition, state.blocks, strict=True):
            if block is None:  # a scalar block: γ⁻¹g (or g without damping)
                for i in idx:
                    scale = 1 if gamma is None else jnp.asarray(gamma, leaves[i].dtype)
                    out[i] = (leaves[i] / scale).astype(leaves[i].dtype)
                new_blocks.append(None)
                continue
            dim = sum(int(leaves[i].size) for i in idx)
            approx = approximation.with_rank(block_rank(dim, approximation.rank))
            dtype = jax.tree.leaves(block)[0].dtype
            gam = None if gamma is None else jnp.asarray(gamma, dtype)
            if placement is not None and split(placement, leaves, idx):
                new_block, ys = sharded_step(
                    placement,
                    approx,
                    block,
                    [leaves[i] for i in idx],
                    [c_leaves[i] for i in idx],
                    due=due,
                    update_every=update_every,
                    damping=gam,
                )
                for i, y in zip(idx, ys, strict=True):
                    out[i] = y
                new_blocks.append(new_block)
                continue
            g = _flatten_block(gathered(placement, leaves, idx), idx, dtype)
            d = _flatten_block(gathered(placement, c_leaves, idx), idx, dtype)
            if hasattr(approx, "fold_precondition_batch"):
                # Local blocks of one rank and dtype are stepped together (one batched eigh), below.
                groups.setdefault((approx, jnp.dtype(dtype)), []).append((len(new_blocks), idx, block, d, g, gam))
                new_blocks.append(None)
                continue
            new_block, y = _block_step(approx, block, d, g, gam, due=due, update_every=update_every)
            _unflatten_block(y, leaves, idx, out)
            new_blocks.append(new_block)
        for (approx, _), members in groups.items():
            stepped = _group_step(approx, members, due=due, update_every=update_every)
            for (pos, idx, _, _, _, _), (new_block, y) in zip(members, stepped, strict=True):
                _unflatten_block(y, leaves, idx, out)
                new_blocks[pos] = new_block
        new_updates = jax.tree.unflatten(jax.tree.structure(updates), out)
        return new_updates, ScaleByLowRankState(count=_next_count(state.count, update_every), blocks=tuple(new_blocks))

    update_jit = jax.jit(update_impl)

    def update_fn(
        updates: Any, state: ScaleByLowRankState, params: Any = None, *, curvature: Any = None, **extra_args: Any
    ) -> tuple[Any, ScaleByLowRankState]:
        del params, extra_args
        _check_real_floating(updates, "gradient", curvature)
        return update_jit(updates, state, curvature)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _next_count(count: jax.Array, update_every: int) -> jax.Array:
    """``count + 1``, saturating near the int32 maximum without losing the period of ``update_every``.

    At ``2³¹ − 1`` the count steps back to ``2³¹ − update_every``, so that
    ``count % update_every`` keeps cycling and curvature updates stay due
    every ``update_every`` steps forever (optax's ``safe_int32_increment``
    would stop at ``2³¹ − 1``, where the update is then due always or never).
    """
    top = jnp.iinfo(jnp.int32).max
    return jnp.where(count >= top, jnp.int32(top - update_every + 1), count + 1).astype(jnp.int32)


def _block_step(
    approx: Any, block: Any, d: jax.Array, g: jax.Array, gamma: Any, *, due: Any, update_every: int
) -> tuple[Any, jax.Array]:
    """The fused update + query when an update is due, the query of the unchanged state otherwise."""

    def fused(state: Any) -> tuple[Any, jax.Array]:
        return approx.fold_precondition(jnp, state, d, g, damping=gamma)

    def query(state: Any) -> tuple[Any, jax.Array]:
        return state, approx.solve(jnp, state, g, damping=gamma)

    if update_every == 1:
        return fused(block)
    return jax.lax.cond(due, fused, query, block)


def _group_step(approx: Any, members: list, *, due: Any, update_every: int) -> list[tuple[Any, jax.Array]]:
    """:func:`_block_step` of local blocks of one rank and dtype; more than one: one batched small phase."""
    if len(members) == 1:
        _, _, block, d, g, gam = members[0]
        return [_block_step(approx, block, d, g, gam, due=due, update_every=update_every)]
    gam = members[0][5]
    blocks = tuple(m[2] for m in members)
    ds = [m[3] for m in members]
    gs = [m[4] for m in members]

    def fused(states: tuple) -> tuple[tuple, tuple]:
        res = approx.fold_precondition_batch(
            jnp, states, ds, gs, damping=gam, map_small=lambda fn, stacked: jax.vmap(fn)(stacked)
        )
        return tuple(r[0] for r in res), tuple(r[1] for r in res)

    def query(states: tuple) -> tuple[tuple, tuple]:
        return states, tuple(approx.solve(jnp, st, g, damping=gam) for st, g in zip(states, gs, strict=True))

    new, ys = fused(blocks) if update_every == 1 else jax.lax.cond(due, fused, query, blocks)
    return list(zip(new, ys, strict=True))


def scale_by_ginger(
    *,
    rank: int = DEFAULT_RANK,
    decay: float = DEFAULT_DECAY,
    damping: float | Callable[[jax.Array], Any] = DEFAULT_DAMPING,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
    reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
    mesh: Any = None,
    axis: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient with Ginger's damped low-rank curvature.

    For each block, with :math:`d_t` the curvature vector and :math:`g_t` the
    gradient (both flattened to the block),

    .. math::
       U_t \operatorname{diag}(\sigma_t) U_t^\top
         = \operatorname{best}_\tau\!\left[\alpha\, U_{t-1} \operatorname{diag}(\sigma_{t-1}) U_{t-1}^\top
           + (1-\alpha)\, d_t d_t^\top\right] \quad\text{(Eq 7, truncated by Eckart–Young)}

    .. math::
       u_t = (\gamma_t I + U_t \operatorname{diag}(\sigma_t) U_t^\top)^{-1} g_t
           = g_t/\gamma_t - U_t \operatorname{diag}(\kappa_t) U_t^\top g_t,
       \qquad \kappa_t = \frac{\sigma_t}{\gamma_t(\gamma_t + \sigma_t)}  \quad\text{(Eq 14–16)}

    The state is updated first and the gradient preconditioned with the
    updated state, as in Algorithm 1. The damping :math:`\gamma_t` is not part
    of the state (eigen path), so a schedule costs nothing.

    Parameters
    ----------
    rank : int
        τ ≥ 1; each block uses ``min(rank, dim − 1)``.
    decay : float
        α ∈ (0, 1), the EMA decay of the curvature (Eq 7).
    damping : float or callable
        γ > 0, or a schedule ``count -> γ`` (an optax schedule).
    blocks : {"leaf", "model"}, pytree or callable
        How parameters are grouped into blocks, see :func:`block_partition`.
    update_every : int
        Fold a curvature vector into the state only on steps
        ``count % update_every == 0`` (the preconditioner is applied at every
        step).
    state_dtype : dtype, optional
        ``jnp.float32`` or ``jnp.float64`` for the curvature state; default
        the dtype of the block's parameters (at least float32). Gradients
        are cast to it for the solve and the result back to the parameters'
        dtype.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update`: after every this many accepted
        updates, ``"auto"`` every 100 for float32 states and never for float64.
    mesh : jax.sharding.Mesh, optional
        Split the states over the devices of this mesh, with ``axis``. A block
        whose parameter arrays all have a first axis that is a multiple of the
        number of devices along ``axis`` gets a state sharded along ``dim``
        (:mod:`lowrank_ggn.sharding`): each device keeps ``dim·τ/n`` numbers
        of it and a step all-reduces O(τ) numbers, without moving any
        parameter array when the arrays are split along their first axis
        (fully sharded data parallelism). Other blocks keep a state
        replicated on the mesh. The updates come back in the layout of the
        gradients.
    axis : str or tuple of str, optional
        The mesh axis (or axes) that splits the parameters; given with ``mesh``.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``update(updates, state, params=None, *, curvature=None)``: when
        ``curvature`` is ``None`` the gradient is the curvature vector (the
        empirical Fisher). A non-finite curvature block leaves that block's
        state unchanged and increments its ``num_nonfinite`` (the
        preconditioned gradient is still returned; wrap the optimiser in
        ``optax.apply_if_finite`` to skip such steps entirely).

    Raises
    ------
    ValueError, TypeError
        For an invalid option, naming it.

    Notes
    -----
    The defaults were chosen by measurement on the reproduction in
    ``experiments/``; :mod:`lowrank_ggn.optim` says how.

    ``update`` is compiled with ``jax.jit`` (also when called eagerly); the
    values of a damping schedule are traced, so they are not checked: a
    schedule must return positive values.

    Under ``jax.vmap`` (several models trained at once) the periodic
    re-orthonormalisation becomes a QR computed at every step, and on CPU
    with jaxlib 0.10 two batched QRs running at once were seen to deadlock
    XLA's thread pool; pass ``reorthonormalize_every=None`` there (runs of
    a few thousand updates do not need it).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from lowrank_ggn.optim.optax import scale_by_ginger
    >>> tx = scale_by_ginger(rank=2, damping=0.1)
    >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}
    >>> updates, state = tx.update(grads, state, params)
    """
    check_common(rank=rank, decay=decay, update_every=update_every)
    approximation = lg.ginger(rank=rank, decay=decay, reorthonormalize_every=reorthonormalize_every)
    return scale_by_lowrank(
        approximation,
        damping=damping,
        blocks=blocks,
        update_every=update_every,
        state_dtype=state_dtype,
        mesh=mesh,
        axis=axis,
    )


def scale_by_qng(
    *,
    rank: int = DEFAULT_RANK,
    decay: float = DEFAULT_DECAY,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
    mesh: Any = None,
    axis: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Precondition the gradient with QNG's windowed factor product (§2.2, corrected).

    For each block,

    .. math::
       q_t = \hat A_t^{-1} d_t,\quad
       K_t = \sqrt{\alpha}\, I + \beta_t q_t q_t^\top,\quad
       \beta_t = \frac{1-\alpha}{\sqrt{\alpha + (1-\alpha)\|q_t\|^2} + \sqrt{\alpha}},\quad
       \hat A_{t+1} = K_{t-\tau+1}\cdots K_t \quad\text{(Eq 9–11)}

    .. math:: u_t = (\hat A_{t+1} \hat A_{t+1}^\top)^{-1} g_t = \hat A_{t+1}^{-\top} \hat A_{t+1}^{-1} g_t .

    The window of τ factors is updated first, then the gradient is
    preconditioned (as for Ginger). QNG has no damping parameter: its
    curvature is at least :math:`\alpha^{\min(\tau, t)} I` (Observation 1) and
    starts at the identity.

    Parameters
    ----------
    rank : int
        τ ≥ 1, the window length; each block uses ``min(rank, dim − 1)``.
    decay : float
        α ∈ (0, 1).
    blocks : {"leaf", "model"}, pytree or callable
        See :func:`block_partition`.
    update_every : int
        Append a factor only on steps ``count % update_every == 0``.
    state_dtype : dtype, optional
        Dtype of the window; default the parameters' dtype (at least float32).
    mesh, axis : optional
        Split the windows over a device mesh, as in :func:`scale_by_ginger`.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``update(updates, state, params=None, *, curvature=None)``; the
        gradient is used when ``curvature`` is ``None``. A non-finite
        curvature block leaves that block's window unchanged and increments
        its ``num_nonfinite``.
    """
    check_common(rank=rank, decay=decay, update_every=update_every)
    return scale_by_lowrank(
        lg.qng(rank=rank, decay=decay),
        damping=None,
        blocks=blocks,
        update_every=update_every,
        state_dtype=state_dtype,
        mesh=mesh,
        axis=axis,
    )


def _finish(
    core: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float | None,
    nesterov: bool,
    weight_decay: float,
    mask: Any,
) -> optax.GradientTransformationExtraArgs:
    if momentum is not None:
        check_nonnegative(momentum, "momentum", upper=1.0)
    check_nonnegative(weight_decay, "weight_decay")
    if isinstance(learning_rate, numbers.Real):
        check_nonnegative(learning_rate, "learning_rate")
    elif not (callable(learning_rate) or isinstance(learning_rate, jax.Array)):
        msg = f"learning_rate must be a number, a 0-d array or a schedule, got {type(learning_rate).__name__}"
        raise TypeError(msg)
    parts: list[optax.GradientTransformation] = [core]
    if momentum:
        parts.append(optax.trace(decay=momentum, nesterov=nesterov))
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay, mask))
    parts.append(optax.scale_by_learning_rate(learning_rate))
    return optax.chain(*parts)


def ginger(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rank: int = DEFAULT_RANK,
    decay: float = DEFAULT_DECAY,
    damping: float | Callable[[jax.Array], Any] = DEFAULT_DAMPING,
    momentum: float | None = DEFAULT_MOMENTUM,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Any = None,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
    reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
    mesh: Any = None,
    axis: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Build the Ginger optimiser (Algorithm 1) with momentum and decoupled weight decay.

    .. math::
       u_t = (\gamma_t I + U_t \operatorname{diag}(\sigma_t) U_t^\top)^{-1} g_t, \qquad
       m_t = \mu\, m_{t-1} + u_t, \qquad
       \theta_{t+1} = \theta_t - \eta_t\, (m_t + \lambda\, \theta_t),

    where :math:`U_t, \sigma_t` follow Eq 7 truncated to rank τ (see
    :func:`scale_by_ginger`), μ is ``momentum`` (heavy ball, as in
    ``optax.sgd``; the paper's "first moment" 0.9) and λ is
    ``weight_decay`` (masked by ``mask``, as in ``optax.adamw``).

    Parameters
    ----------
    learning_rate : float, jax.Array or callable
        η, or an optax schedule ``count -> η``.
    rank : int
        τ ≥ 1, the rank of each block's curvature; a block of ``dim``
        parameters uses ``min(rank, dim − 1)``.
    decay : float
        α ∈ (0, 1), the EMA decay of the curvature (Eq 7).
    damping : float or callable
        γ > 0, or a schedule ``count -> γ``. Its scale is that of the
        curvature (see Notes); changing it costs nothing.
    momentum : float or None
        μ ∈ [0, 1); ``None`` or 0 disables momentum.
    nesterov : bool
        Use Nesterov momentum instead of heavy ball.
    weight_decay : float
        λ ≥ 0, decoupled: added after preconditioning, so the curvature does
        not rescale it.
    mask : pytree or callable, optional
        Which parameters weight decay applies to, as the ``mask`` of
        ``optax.add_decayed_weights`` (for example, not to biases).
    blocks : {"leaf", "model"}, pytree or callable
        How parameters are grouped into blocks, see :func:`block_partition`.
    update_every : int
        Fold a curvature vector into the state every this many steps; the
        preconditioner is applied at every step.
    state_dtype : dtype, optional
        Dtype of the curvature state (``jnp.float32`` or ``jnp.float64``);
        default the parameters' dtype, at least float32.
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`scale_by_ginger`.
    mesh, axis : optional
        Split the states over a device mesh, as in :func:`scale_by_ginger`.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``optax.chain`` of :func:`scale_by_ginger`, ``optax.trace``
        (momentum), ``optax.add_decayed_weights`` (weight decay) and
        ``optax.scale_by_learning_rate``. Pass the sampled-label gradient as
        ``update(grads, state, params, curvature=d)``.

    Notes
    -----
    The defaults (τ = 4, α = 0.99, γ = 1, μ = 0.9, one block per parameter
    array) were chosen by measurement on the reproduction in
    ``experiments/`` (:mod:`lowrank_ggn.optim` says how); there the tuned
    learning rate at these defaults was 0.1 on the MLPs and 0.05 on the
    digits CNN. γ is relative to
    the scale of the curvature (the Fisher of a mean negative log-likelihood
    there): it leaves directions whose curvature eigenvalue is well below γ
    as plain gradient steps scaled by 1/γ.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from lowrank_ggn.optim.optax import ginger
    >>> tx = ginger(0.1, rank=2)
    >>> params = {"w": jnp.ones((4, 3))}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.full((4, 3), 0.1)}
    >>> updates, state = tx.update(grads, state, params, curvature=grads)
    """
    core = scale_by_ginger(
        rank=rank,
        decay=decay,
        damping=damping,
        blocks=blocks,
        update_every=update_every,
        state_dtype=state_dtype,
        reorthonormalize_every=reorthonormalize_every,
        mesh=mesh,
        axis=axis,
    )
    return _finish(core, learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, mask=mask)


def qng(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rank: int = DEFAULT_RANK,
    decay: float = DEFAULT_DECAY,
    momentum: float | None = DEFAULT_MOMENTUM,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    mask: Any = None,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
    mesh: Any = None,
    axis: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Build the QNG optimiser (He et al., 2022; the paper's §2.2, corrected) with momentum and weight decay.

    .. math::
       u_t = (\hat A_{t+1} \hat A_{t+1}^\top)^{-1} g_t, \qquad
       m_t = \mu\, m_{t-1} + u_t, \qquad
       \theta_{t+1} = \theta_t - \eta_t\, (m_t + \lambda\, \theta_t),

    with :math:`\hat A` the product of the last τ factors (see
    :func:`scale_by_qng`).

    Parameters
    ----------
    learning_rate : float, jax.Array or callable
        η, or an optax schedule ``count -> η``.
    rank : int
        τ ≥ 1, the window length; a block of ``dim`` parameters uses
        ``min(rank, dim − 1)``.
    decay : float
        α ∈ (0, 1).
    momentum : float or None
        μ ∈ [0, 1); ``None`` or 0 disables momentum.
    nesterov : bool
        Use Nesterov momentum instead of heavy ball.
    weight_decay : float
        λ ≥ 0, decoupled (added after preconditioning).
    mask : pytree or callable, optional
        Which parameters weight decay applies to, as the ``mask`` of
        ``optax.add_decayed_weights``.
    blocks : {"leaf", "model"}, pytree or callable
        How parameters are grouped into blocks, see :func:`block_partition`.
    update_every : int
        Append a factor to the window every this many steps.
    state_dtype : dtype, optional
        Dtype of the window; default the parameters' dtype, at least float32.
    mesh, axis : optional
        Split the states over a device mesh, as in :func:`scale_by_ginger`.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``optax.chain`` of :func:`scale_by_qng`, momentum, weight decay and
        the learning rate, as for :func:`ginger`. Pass the sampled-label
        gradient as ``update(grads, state, params, curvature=d)``.

    Notes
    -----
    The learning rate tuned on the reproduction in ``experiments/`` (τ = 4,
    α = 0.99, μ = 0.9) was 0.1 on the MLPs and 0.05 on the digits CNN.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from lowrank_ggn.optim.optax import qng
    >>> tx = qng(0.1, rank=2)
    >>> params = {"w": jnp.ones((4, 3))}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.full((4, 3), 0.1)}
    >>> updates, state = tx.update(grads, state, params, curvature=grads)
    """
    core = scale_by_qng(
        rank=rank,
        decay=decay,
        blocks=blocks,
        update_every=update_every,
        state_dtype=state_dtype,
        mesh=mesh,
        axis=axis,
    )
    return _finish(core, learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, mask=mask)


# -- damping policies ----------------------------------------------------------------------------


class ScaleByLowRankPolicyState(NamedTuple):
    """State of :func:`scale_by_lowrank` with a damping policy: the generic state plus the policy's.

    Parameters
    ----------
    count : jax.Array
        The step counter, as in :class:`ScaleByLowRankState`.
    blocks : tuple
        The per-block states, as in :class:`ScaleByLowRankState`.
    damping : jax.Array
        The policy's state (see the attribute below).
    """

    count: jax.Array  # type: ignore[assignment]
    """0-d int32: number of ``update`` calls."""
    blocks: tuple[Any, ...]
    """One approximation state per block (``None`` for scalar blocks)."""
    damping: jax.Array
    """0-d float32: the policy's state (γ for Levenberg–Marquardt, 0 for the others)."""


def _scale_by_lowrank_policy(
    approximation: Any, policy: DampingPolicy, *, blocks: Blocks, update_every: int, state_dtype: Any, mesh: Any
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_lowrank` with a damping policy of :mod:`lowrank_ggn.optim.damping`."""
    if not approximation.needs_damping:
        msg = f"damping must be None for {approximation.name!r}, whose damping is implicit"
        raise ValueError(msg)
    if mesh is not None:
        msg = "mesh: a damping policy is not supported on sharded states yet; pass a number or a schedule"
        raise ValueError(msg)
    _check_blocks(blocks)
    policy.check_state_type(approximation.state_type)

    def init_fn(params: Any) -> ScaleByLowRankPolicyState:
        return ScaleByLowRankPolicyState(
            count=jnp.zeros([], jnp.int32),
            blocks=_init_blocks(params, blocks, approximation, state_dtype),
            damping=jnp.asarray(policy.init(), jnp.float32),
        )

    def update_impl(
        updates: Any, state: ScaleByLowRankPolicyState, curvature: Any, ratio: Any
    ) -> tuple[Any, ScaleByLowRankPolicyState]:
        leaves = jax.tree.leaves(updates)
        c_leaves = _curvature_leaves(updates, curvature)
        partition = _partition_for_update(updates, blocks, len(state.blocks))
        policy_state = state.damping if ratio is None else policy.adapt(state.damping, ratio)
        gamma = policy.damping(policy_state, state.count)
        due = state.count % update_every == 0
        out: list[Any] = [None] * len(leaves)
        new_blocks: list[Any] = []
        for idx, block in zip(partition, state.blocks, strict=True):
            if block is None:  # a scalar block: γ⁻¹g
                for i in idx:
                    out[i] = (leaves[i] / jnp.asarray(gamma, leaves[i].dtype)).astype(leaves[i].dtype)
                new_blocks.append(None)
                continue
            dim = sum(int(leaves[i].size) for i in idx)
            approx = approximation.with_rank(block_rank(dim, approximation.rank))
            dtype = jax.tree.leaves(block)[0].dtype
            g = _flatten_block(leaves, idx, dtype)
            d = _flatten_block(c_leaves, idx, dtype)
            if policy.needs_state:  # fold first, then the damping of the folded state
                folded = approx.fold(jnp, block, d)
                new_block = (
                    folded if update_every == 1 else jax.tree.map(lambda a, b: jnp.where(due, a, b), folded, block)
                )
                gam = jnp.asarray(policy.block_damping(gamma, new_block), dtype)
                y = approx.solve(jnp, new_block, g, damping=gam)
            else:
                new_block, y = _block_step(
                    approx, block, d, g, jnp.asarray(gamma, dtype), due=due, update_every=update_every
                )
            _unflatten_block(y, leaves, idx, out)
            new_blocks.append(new_block)
        new_updates = jax.tree.unflatten(jax.tree.structure(updates), out)
        count = optax.safe_int32_increment(state.count)
        return new_updates, ScaleByLowRankPolicyState(
            count=count, blocks=tuple(new_blocks), damping=jnp.asarray(policy_state, jnp.float32)
        )

    update_jit = jax.jit(update_impl)

    def update_fn(
        updates: Any,
        state: ScaleByLowRankPolicyState,
        params: Any = None,
        *,
        curvature: Any = None,
        reduction_ratio: Any = None,
        **extra_args: Any,
    ) -> tuple[Any, ScaleByLowRankPolicyState]:
        del params, extra_args
        ratio = None if reduction_ratio is None or not policy.adaptive else jnp.asarray(reduction_ratio, jnp.float32)
        return update_jit(updates, state, curvature, ratio)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# -- the authors' released update ------------------------------------------------------------------


class LowRankPaperState(NamedTuple):
    """State of :func:`lowrank_paper` and :func:`ginger_paper`.

    Parameters
    ----------
    moment : optax.EmaState
        The first moment (see the attribute below).
    precondition : ScaleByLowRankState or ScaleByLowRankPolicyState
        The curvature states (see the attribute below).
    learning_rate : optax.ScaleByScheduleState or optax.EmptyState
        The learning rate's state (see the attribute below).
    """

    moment: Any
    """``optax.EmaState``: the EMA of the gradients and its step count (for the debiasing)."""
    precondition: Any
    """The state of :func:`scale_by_lowrank` (one curvature state per block)."""
    learning_rate: Any
    """The state of ``optax.scale_by_learning_rate`` (a step count for a schedule)."""


def lowrank_paper(
    approximation: Any,
    learning_rate: optax.ScalarOrSchedule = 2e-4,
    *,
    damping: float | Callable[[jax.Array], Any] | DampingPolicy | None = 1e-5,
    b1: float = 0.9,
    clip: float | None = 1.0,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Build the authors' released update with any low-rank curvature approximation.

    .. math::
       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\qquad
       \hat m_t = \frac{m_t}{1-\beta_1^t},\qquad
       \theta_{t+1} = \theta_t - \eta_t \operatorname{clip}_{[-\rho, \rho]}\!\big(P_t^{-1} \hat m_t\big),

    with :math:`P_t` the damped curvature of ``approximation`` after folding
    in the curvature vector :math:`d_t` (Algorithm 1), the clip element-wise.
    This is the update of the authors' code (MANGA-UOFA/Ginger,
    ``optimizers/ginger.py``: precondition the debiased first moment, clip at
    ρ, scale by the learning rate), written with this library's
    approximations; its updates equal those of ``optax.chain(optax.ema(b1,
    debias=True), scale_by_lowrank(approximation, damping=...),
    optax.clip(clip), optax.scale_by_learning_rate(learning_rate))`` when
    that chain is given the same curvature vector.

    Parameters
    ----------
    approximation : lowrank_ggn.Ginger, lowrank_ggn.GingerProduct or lowrank_ggn.QNG
        What to keep per block, e.g. ``lg.ginger(rank=4, decay=0.99)``.
    learning_rate : float, jax.Array or callable
        η ≥ 0, or an optax schedule ``count -> η``.
    damping : float, callable, DampingPolicy or None
        γ, as for :func:`scale_by_lowrank` (``None`` for QNG). The authors'
        1e-5 is small against the curvature, so P⁻¹ scales directions the
        curvature does not see by 1/γ = 1e5: the clip then decides the
        step there (see the optimisers page of the documentation).
    b1 : float
        β₁ ∈ [0, 1), the first-moment decay (0: no momentum).
    clip : float or None
        ρ > 0, the element-wise bound on the preconditioned moment; ``None``
        for no clip.
    blocks : {"leaf", "model"}, pytree or callable
        As for :func:`scale_by_lowrank`.
    update_every : int
        As for :func:`scale_by_lowrank`.
    state_dtype : dtype, optional
        As for :func:`scale_by_lowrank`.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        ``update(grads, state, params=None, *, curvature=None, reduction_ratio=None)``:
        without ``curvature`` the gradient (not the moment) is folded into
        the curvature, as in the authors' code. The state is a
        :class:`LowRankPaperState`.

    Raises
    ------
    ValueError, TypeError
        For an invalid option, naming it.
    """
    check_nonnegative(b1, "b1", upper=1.0)
    if clip is not None:
        check_damping(clip, "clip")
    if isinstance(learning_rate, numbers.Real):
        check_nonnegative(learning_rate, "learning_rate")
    core = scale_by_lowrank(
        approximation, damping=damping, blocks=blocks, update_every=update_every, state_dtype=state_dtype
    )
    moment = optax.ema(b1, debias=True)
    scale = optax.scale_by_learning_rate(learning_rate)

    def init_fn(params: Any) -> LowRankPaperState:
        return LowRankPaperState(moment.init(params), core.init(params), scale.init(params))

    def update_fn(
        updates: Any, state: LowRankPaperState, params: Any = None, *, curvature: Any = None, **extra_args: Any
    ) -> tuple[Any, LowRankPaperState]:
        m, moment_state = moment.update(updates, state.moment, params)
        d = updates if curvature is None else curvature
        u, core_state = core.update(m, state.precondition, params, curvature=d, **extra_args)
        if clip is not None:
            u = jax.tree.map(lambda x: jnp.clip(x, -clip, clip), u)
        u, scale_state = scale.update(u, state.learning_rate, params)
        return u, LowRankPaperState(moment_state, core_state, scale_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ginger_paper(
    learning_rate: optax.ScalarOrSchedule = 2e-4,
    *,
    rank: int = 4,
    decay: float = 0.99,
    damping: float | Callable[[jax.Array], Any] | DampingPolicy = 1e-5,
    b1: float = 0.9,
    clip: float | None = 1.0,
    blocks: Blocks = "leaf",
    update_every: int = 1,
    state_dtype: Any = None,
    reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
) -> optax.GradientTransformationExtraArgs:
    r"""Build Ginger as the authors released it: precondition the debiased first moment, clip, scale.

    :func:`lowrank_paper` with ``lg.ginger(rank=rank, decay=decay)``; the
    defaults are those of the authors' configuration (MANGA-UOFA/Ginger:
    τ = 4, b2 = α = 0.99, damping 1e-5, ρ = 1, learning rate 2e-4, b1 = 0.9).
    Its updates equal those of ``optax.chain(optax.ema(b1, debias=True),
    scale_by_ginger(rank=rank, decay=decay, damping=damping), optax.clip(clip),
    optax.scale(-learning_rate))`` given the same curvature vector.

    Parameters
    ----------
    learning_rate : float, jax.Array or callable
        η ≥ 0, or an optax schedule.
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1), the EMA decay of the curvature.
    damping : float, callable or DampingPolicy
        γ > 0, a schedule, or a policy of :mod:`lowrank_ggn.optim.damping`.
    b1 : float
        β₁ ∈ [0, 1), the first-moment decay.
    clip : float or None
        ρ > 0, the element-wise clip of the preconditioned moment; ``None``: none.
    blocks : {"leaf", "model"}, pytree or callable
        As for :func:`scale_by_ginger`.
    update_every : int
        As for :func:`scale_by_ginger`.
    state_dtype : dtype, optional
        As for :func:`scale_by_ginger`.
    reorthonormalize_every : int, "auto" or None
        As for :func:`scale_by_ginger`.

    Returns
    -------
    optax.GradientTransformationExtraArgs
        See :func:`lowrank_paper`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from lowrank_ggn.optim.optax import ginger_paper
    >>> tx = ginger_paper(2e-4, rank=2)
    >>> params = {"w": jnp.ones((4, 3))}
    >>> state = tx.init(params)
    >>> grads = {"w": jnp.full((4, 3), 0.1)}
    >>> updates, state = tx.update(grads, state, params, curvature=grads)
    """
    check_common(rank=rank, decay=decay, update_every=update_every, reorthonormalize_every=reorthonormalize_every)
    approximation = lg.ginger(rank=rank, decay=decay, reorthonormalize_every=reorthonormalize_every)
    return lowrank_paper(
        approximation,
        learning_rate,
        damping=damping,
        b1=b1,
        clip=clip,
        blocks=blocks,
        update_every=update_every,
        state_dtype=state_dtype,
    )
