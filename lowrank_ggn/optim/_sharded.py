"""Placement of the optax states on a JAX device mesh: which blocks are split, and how.

With ``mesh`` and ``axis`` given to :func:`~lowrank_ggn.optim.optax.scale_by_ginger`
(and the other optax front-ends), a block whose parameter arrays can all be
split along their first axis over ``axis`` (the layout of fully sharded data
parallelism; see :func:`lowrank_ggn.sharding.splittable`) gets a state sharded
along ``dim``, and each step runs on each device's own blocks of the arrays
(:func:`lowrank_ggn.sharding.ginger_update_leaves` and friends), all-reducing
O(τ) numbers. Any other block (small arrays: biases of odd length, scalars)
keeps a state replicated on the mesh, updated identically on every device from
its arrays gathered if they were split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lowrank_ggn as lg
import lowrank_ggn.sharding as lgs

__all__ = ["Placement", "check_placement", "gathered", "ginger_step", "init_state", "qng_step", "split"]


class Placement(NamedTuple):
    """Where the states live: a mesh and the axis (or axes) that split the parameters."""

    mesh: Mesh
    """The device mesh."""
    axis: str | tuple[str, ...]
    """The mesh axis (or axes) along which parameter arrays are split by their first axis."""


def check_placement(mesh: Any, axis: Any) -> Placement | None:
    """Return the placement, or ``None`` when neither ``mesh`` nor ``axis`` is given."""
    if mesh is None and axis is None:
        return None
    if mesh is None or axis is None:
        msg = "mesh and axis go together: give both, or neither"
        raise ValueError(msg)
    lgs.ginger_sharding(mesh, axis)  # checks the mesh and the axis names
    return Placement(mesh, axis)


def split(placement: Placement | None, leaves: Sequence[Any], idx: Sequence[int]) -> bool:
    """Return whether the block of ``leaves[idx]`` is split along the mesh axis."""
    if placement is None:
        return False
    return all(lgs.splittable(tuple(jnp.shape(leaves[i])), placement.mesh, placement.axis) for i in idx)


def init_state(placement: Placement, *, is_split: bool, dim: int, rank: int, dtype: Any, kind: str) -> Any:
    """Create a block's state: sharded when the block is split, replicated on the mesh otherwise."""
    if is_split:
        sharded = lgs.ginger_init if kind == "ginger" else lgs.qng_init
        return sharded(dim, rank, mesh=placement.mesh, axis=placement.axis, dtype=dtype)
    init = lg.ginger_init if kind == "ginger" else lg.qng_init
    return jax.device_put(init(dim, rank, xp=jnp, dtype=dtype), NamedSharding(placement.mesh, P()))


def gathered(placement: Placement | None, leaves: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    """Return ``leaves`` with those of ``idx`` replicated on the mesh (unchanged without a mesh).

    Only needed on an ``Explicit`` mesh, where the flattening of a block into
    one vector must not mix layouts; XLA places the arrays itself on ``Auto``
    meshes.
    """
    out = list(leaves)
    if placement is None or not lgs._explicit(placement.mesh, placement.axis):  # noqa: SLF001
        return out
    for i in idx:
        out[i] = jax.reshard(leaves[i], NamedSharding(placement.mesh, P()))
    return out


def _maybe(due: Any, fn: Callable[[Any], Any], state: Any, update_every: int) -> Any:
    return fn(state) if update_every == 1 else jax.lax.cond(due, fn, lambda s: s, state)


def ginger_step(
    placement: Placement,
    block: lg.GingerState,
    g_leaves: list[Any],
    d_leaves: list[Any],
    *,
    due: Any,
    update_every: int,
    decay: Any,
    damping: Any,
    reorthonormalize_every: int | None,
) -> tuple[lg.GingerState, list[Any]]:
    """Update a split block's Ginger state with ``d`` and precondition ``g``, both given as arrays."""
    mesh, axis = placement.mesh, placement.axis

    def fold(state: lg.GingerState) -> lg.GingerState:
        return lgs.ginger_update_leaves(
            state, d_leaves, decay=decay, reorthonormalize_every=reorthonormalize_every, mesh=mesh, axis=axis
        )

    block = _maybe(due, fold, block, update_every)
    return block, lgs.ginger_precondition_leaves(block, g_leaves, damping=damping, mesh=mesh, axis=axis)


def qng_step(
    placement: Placement,
    block: lg.QNGState,
    g_leaves: list[Any],
    d_leaves: list[Any],
    *,
    due: Any,
    update_every: int,
    decay: Any,
) -> tuple[lg.QNGState, list[Any]]:
    """Append a split block's QNG factor from ``d`` and precondition ``g``, both given as arrays."""
    mesh, axis = placement.mesh, placement.axis

    def fold(state: lg.QNGState) -> lg.QNGState:
        return lgs.qng_update_leaves(state, d_leaves, decay=decay, mesh=mesh, axis=axis)

    block = _maybe(due, fold, block, update_every)
    return block, lgs.qng_precondition_leaves(block, g_leaves, mesh=mesh, axis=axis)
