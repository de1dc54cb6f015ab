"""The batched fused step (one ``eigh`` for the cores of several blocks) against the per-block step and dense float64.

:func:`lowrank_ggn._core.ginger.update_precondition_batch` runs the passes over
each basis block by block and the small phase once over the stacked cores
(``jax.vmap``); the optax front-end uses it for local blocks of one rank and
dtype. A batch that mixed up its blocks (or their order) would give each block
the rotation of another: the per-block and dense comparisons below catch it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn._core import ginger as core_ginger
from lowrank_ggn.optim.optax import scale_by_lowrank

jax.config.update("jax_enable_x64", True)

ALPHA, GAMMA = 0.9, 0.05


def _vmap(fn, stacked):
    return jax.vmap(fn)(stacked)


def _dense_step(state, d, g, rank):
    """Dense float64 reference: truncate α U diag(σ) Uᵀ + (1−α) d dᵀ to rank τ, then (γI + A)⁻¹ g."""
    u, s = np.asarray(state.basis, np.float64), np.asarray(state.eigvals, np.float64)
    d = np.asarray(d, np.float64)
    if not np.all(np.isfinite(d)):
        a = (u * s) @ u.T
    else:
        m = ALPHA * (u * s) @ u.T + (1 - ALPHA) * np.outer(d, d)
        w, v = np.linalg.eigh(m)
        w, v = w[::-1][:rank], v[:, ::-1][:, :rank]
        a = (v * w) @ v.T
    y = np.linalg.solve(GAMMA * np.eye(len(d)) + a, np.asarray(g, np.float64))
    return a, y


def _signed(basis):
    u = np.asarray(basis)
    return u * np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])


def _matrix(state):
    u = np.asarray(state.basis)
    return (u * np.asarray(state.eigvals)) @ u.T


def _states(rng, dims, rank):
    states = []
    for dim in dims:
        st = lg.ginger_init(dim, rank, xp=jnp, dtype=jnp.float64)
        for _ in range(rank + 2):  # distinct, nonzero eigenvalues
            st = lg.ginger_update(st, jnp.asarray(rng.standard_normal(dim)), decay=ALPHA, reorthonormalize_every=None)
        states.append(st)
    return states


@pytest.mark.parametrize("every", [None, 2])
def test_batch_matches_per_block_and_dense(every):
    rng = np.random.default_rng(0)
    dims, rank = [40, 7, 90, 25], 4
    states = _states(rng, dims, rank)
    batch_states = list(states)
    for step in range(4):
        ds, gs = [], []
        for i, dim in enumerate(dims):
            d = rng.standard_normal(dim)
            if i == 1:  # nearly in span U: the CGS2 path
                u = np.asarray(states[i].basis)
                d = u @ rng.standard_normal(rank) + 1e-6 * d
            if i == 2 and step == 1:  # a rejected update among accepted ones
                d[3] = np.nan
            ds.append(jnp.asarray(d))
            gs.append(jnp.asarray(rng.standard_normal(dim)))
        batched = jax.jit(
            lambda sts, ds, gs: core_ginger.update_precondition_batch(
                jnp, sts, ds, gs, decay=ALPHA, damping=GAMMA, reorthonormalize_every=every, map_small=_vmap
            )
        )(tuple(batch_states), ds, gs)
        for i in range(len(dims)):
            single, y1 = core_ginger.update_precondition(
                jnp, states[i], ds[i], gs[i], decay=ALPHA, damping=GAMMA, reorthonormalize_every=every
            )
            new, y = batched[i]
            a_ref, y_ref = _dense_step(states[i], ds[i], gs[i], rank)
            a_new = (np.asarray(new.basis) * np.asarray(new.eigvals)) @ np.asarray(new.basis).T
            scale = np.abs(a_ref).max() + 1
            np.testing.assert_allclose(a_new, a_ref, atol=1e-9 * scale)
            np.testing.assert_allclose(np.asarray(y), y_ref, rtol=1e-8, atol=1e-8 * np.abs(y_ref).max())
            # A batched eigh may choose other signs of the eigenvectors: compare the columns up to sign.
            np.testing.assert_allclose(_signed(new.basis), _signed(single.basis), rtol=1e-9, atol=1e-9)
            for field in new._fields[1:]:
                np.testing.assert_allclose(
                    np.asarray(getattr(new, field)), np.asarray(getattr(single, field)), rtol=1e-9, atol=1e-12
                )
            np.testing.assert_allclose(np.asarray(y), np.asarray(y1), rtol=1e-9, atol=1e-12)
            assert int(new.num_nonfinite) == (1 if i == 2 and step >= 1 else 0)
        batch_states = [b[0] for b in batched]
        states = [b[0] for b in batched]


def test_optax_front_end_matches_public_per_block_step():
    """Blocks of different size, one with a clipped rank (its own group), a scalar block: per-block public steps."""
    rng = np.random.default_rng(1)
    shapes = {"a": (6, 7), "b": (7,), "c": (3,), "d": (5, 4), "e": ()}
    params = {k: jnp.asarray(rng.standard_normal(s)) for k, s in shapes.items()}
    approx = lg.ginger(rank=4, decay=ALPHA, reorthonormalize_every=3)
    tx = scale_by_lowrank(approx, damping=GAMMA)
    state = tx.init(params)
    update = jax.jit(lambda g, s, c: tx.update(g, s, curvature=c))
    names = sorted(shapes)  # the leaf order of a dict
    refs = {
        k: approx.with_rank(min(4, int(np.prod(shapes[k])) - 1)).init(
            int(np.prod(shapes[k])), xp=jnp, dtype=jnp.float64
        )
        for k in names
        if k != "e"
    }
    assert refs["c"].basis.shape[1] == 2
    for _ in range(4):
        g = {k: jnp.asarray(rng.standard_normal(s)) for k, s in shapes.items()}
        c = {k: jnp.asarray(rng.standard_normal(s)) for k, s in shapes.items()}
        out, state = update(g, state, c)
        for j, k in enumerate(k for k in names if k != "e"):
            a = approx.with_rank(refs[k].basis.shape[1])
            refs[k], y = a.update_precondition(refs[k], jnp.ravel(c[k]), jnp.ravel(g[k]), damping=GAMMA)
            np.testing.assert_allclose(np.ravel(out[k]), np.asarray(y), rtol=1e-10, atol=1e-12)
            # From the initial state the eigenvalues are tied at zero and the basis is not unique:
            # compare the represented matrices.
            np.testing.assert_allclose(_matrix(state.blocks[j]), _matrix(refs[k]), rtol=1e-9, atol=1e-10)
            for field in refs[k]._fields[1:]:
                np.testing.assert_allclose(
                    np.asarray(getattr(state.blocks[j], field)),
                    np.asarray(getattr(refs[k], field)),
                    rtol=1e-10,
                    atol=1e-12,
                )
        np.testing.assert_allclose(np.asarray(out["e"]), np.asarray(g["e"]) / GAMMA)


@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
def test_finite_max_abs_under_jit(bad):
    """Under jit ``finite_max_abs`` is one reduction of ``|v|``: NaN and ±inf still make it non-finite."""
    from lowrank_ggn._core.brand import finite_max_abs

    v = np.random.default_rng(2).standard_normal(50) * 1e-20
    if bad is not None:
        v[17] = bad
    finite, vmax = jax.jit(lambda v: finite_max_abs(jnp, v))(jnp.asarray(v, jnp.float32))
    assert bool(finite) == (bad is None)
    if bad is None:
        assert float(vmax) == float(np.max(np.abs(v.astype(np.float32))))
