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

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import lowrank_ggn.sharding as lgs

__all__ = ["Placement", "check_placement", "gathered", "init_state", "split", "step"]


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


def init_state(placement: Placement, approximation: Any, *, is_split: bool, dim: int, dtype: Any) -> Any:
    """Create a block's state: sharded when the block is split, replicated on the mesh otherwise."""
    if is_split:
        return lgs.init(approximation, dim, mesh=placement.mesh, axis=placement.axis, dtype=dtype)
    return jax.device_put(approximation.init(dim, xp=jnp, dtype=dtype), NamedSharding(placement.mesh, P()))


def gathered(placement: Placement | None, leaves: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    """Return ``leaves`` with those of ``idx`` replicated on the mesh (unchanged without a mesh).

    Only needed on an ``Explicit`` mesh, where the flattening of a block into
    one vector must not mix layouts; XLA places the arrays itself on ``Auto``
    meshes.
    """
    out = list(leaves)
    if placement is None or not lgs.is_explicit(placement.mesh, placement.axis):
        return out
    for i in idx:
        out[i] = jax.reshard(leaves[i], NamedSharding(placement.mesh, P()))
    return out


def step(
    placement: Placement,
    approximation: Any,
    block: Any,
    g_leaves: list[Any],
    d_leaves: list[Any],
    *,
    due: Any,
    update_every: int,
    damping: Any,
) -> tuple[Any, list[Any]]:
    """One step of a split block: the fused update + query when an update is due, the query otherwise."""
    mesh, axis = placement.mesh, placement.axis

    def fused(state: Any) -> tuple[Any, list[Any]]:
        return lgs.update_precondition_leaves(
            approximation, state, d_leaves, g_leaves, damping=damping, mesh=mesh, axis=axis
        )

    def query(state: Any) -> tuple[Any, list[Any]]:
        return state, lgs.precondition_leaves(approximation, state, g_leaves, damping=damping, mesh=mesh, axis=axis)

    if update_every == 1:
        return fused(block)
    return jax.lax.cond(due, fused, query, block)
