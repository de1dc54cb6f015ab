"""The update and the query with ``dim`` split into blocks, on every backend, in one process.

The sharded front-ends (JAX ``shard_map``, ``torch.distributed``) run the
library's own cores on each block with a :class:`~lowrank_ggn._core.reduction.AllReduce`
that completes the reductions over ``dim``. Here three threads play the three
devices, with an all-reduce built on a barrier, so the split algorithm is
checked on every backend and dtype of the ``xp`` fixture against the same
algorithm on the whole vector (:data:`~lowrank_ggn._core.reduction.LOCAL`).

JAX is left to ``tests/test_sharding.py`` (8 simulated devices, ``shard_map``):
eager JAX still traces both branches of ``lax.cond``, and tracing an all-reduce
in one thread cannot meet the other threads' tracers.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn._core import ginger as core_ginger
from lowrank_ggn._core import qng as core_qng
from lowrank_ggn._core.brand import reorthonormalize_gram
from lowrank_ggn._core.operator import solve
from lowrank_ggn._core.reduction import LOCAL, AllReduce
from lowrank_ggn.backends import array_namespace
from tests._streams import orthonormal

BLOCKS = (5, 8, 6)  # uneven blocks of dim = 19
DIM, RANK, DECAY, DAMPING, EVERY = sum(BLOCKS), 3, 0.8, 1e-2, 4
BOUNDS = np.cumsum((0, *BLOCKS))


class ThreadGroup:
    """An all-reduce among threads: each adds the partial sums in shard order, so all get the same bits."""

    def __init__(self, n: int) -> None:
        self.barrier = threading.Barrier(n, timeout=120)
        self.slots: list = [None] * n

    def _combine(self, k, x, op):
        self.slots[k] = x
        self.barrier.wait()
        out = self.slots[0]
        for other in self.slots[1:]:
            out = op(out, other)
        self.barrier.wait()  # nobody overwrites a slot before everyone has read it
        return out

    def reduction(self, k: int) -> AllReduce:
        return AllReduce(
            lambda x: self._combine(k, x, lambda a, b: a + b),
            lambda x: self._combine(k, x, lambda a, b: a & b),
            lambda x: self._combine(k, x, lambda a, b: array_namespace(a).maximum(a, b)),
        )


def _split_run(fn, *per_shard):
    """Run ``fn(k, reduction, *blocks_k)`` on one thread per shard; return the per-shard results."""
    group = ThreadGroup(len(BLOCKS))
    with ThreadPoolExecutor(len(BLOCKS)) as pool:
        futures = [pool.submit(fn, k, group.reduction(k), *(a[k] for a in per_shard)) for k in range(len(BLOCKS))]
        return [f.result() for f in futures]


def _rows(x, k, axis=0):
    lo, hi = BOUNDS[k], BOUNDS[k + 1]
    return x[lo:hi] if axis == 0 else x[:, lo:hi]


def _stream(rng):
    ds = []
    for t in range(10):
        d = rng.standard_normal(DIM) * np.geomspace(1.0, 1e-2, DIM)
        if t == 3:
            d[BOUNDS[1] + 2] = np.nan  # on the second shard only
        if t == 4:
            d = np.zeros(DIM)
        ds.append(d)
    return ds


def _dense(basis, eigvals):
    return (basis * eigvals) @ basis.T


@pytest.fixture
def xp_threads(xp):
    """The ``xp`` backends less JAX."""
    if xp.name == "jax":
        pytest.skip("JAX runs split in tests/test_sharding.py (shard_map on 8 simulated devices)")
    return xp


def test_shard_reduction_split_ginger_equals_whole(xp_threads):
    xp = xp_threads
    rng = np.random.default_rng(11)
    ds = [xp.to_numpy(xp.asarray(d)) for d in _stream(rng)]
    g = xp.to_numpy(xp.asarray(rng.standard_normal((DIM, 2))))
    ns = xp.ns

    def run(k, reduce, d_blocks, g_block):
        state = lg.ginger_init(DIM, RANK, xp=xp.module, dtype=xp.dtype)
        if reduce is not LOCAL:
            state = state._replace(basis=xp.asarray(_rows(xp.to_numpy(state.basis), k)))
        for d in d_blocks:
            state = core_ginger.update(
                ns, state, xp.asarray(d), decay=DECAY, reorthonormalize_every=EVERY, reduce=reduce
            )
        gamma = ns.asarray(DAMPING, dtype=xp.dtype)
        return state, solve(ns, state.basis, state.eigvals, xp.asarray(g_block), gamma, reduce=reduce)

    whole, y_whole = run(0, LOCAL, ds, g)
    shards = _split_run(run, [[_rows(d, k) for d in ds] for k in range(3)], [_rows(g, k) for k in range(3)])
    basis = np.concatenate([xp.to_numpy(s.basis) for s, _ in shards])
    y = np.concatenate([xp.to_numpy(y) for _, y in shards])
    eigvals = xp.to_numpy(shards[0][0].eigvals)
    for s, _ in shards[1:]:  # replicated: the same bits on every shard
        np.testing.assert_array_equal(xp.to_numpy(s.eigvals), eigvals)
        assert int(xp.to_numpy(s.step)) == int(xp.to_numpy(shards[0][0].step))
    m = _dense(xp.to_numpy(whole.basis), xp.to_numpy(whole.eigvals))
    assert np.abs(_dense(basis, eigvals) - m).max() <= xp.tol(100) * np.abs(m).max()
    assert np.abs(y - xp.to_numpy(y_whole)).max() <= xp.tol(100) * np.abs(xp.to_numpy(y_whole)).max()
    assert int(xp.to_numpy(shards[0][0].num_nonfinite)) == int(xp.to_numpy(whole.num_nonfinite)) == 1
    assert int(xp.to_numpy(shards[0][0].step)) == int(xp.to_numpy(whole.step)) == 9


def test_shard_reduction_split_qng_equals_whole(xp_threads):
    xp = xp_threads
    rng = np.random.default_rng(12)
    ds = [xp.to_numpy(xp.asarray(d)) for d in _stream(rng)]
    g = xp.to_numpy(xp.asarray(rng.standard_normal(DIM)))
    ns = xp.ns

    def run(k, reduce, d_blocks, g_block):
        q = lg.qng_init(DIM, RANK, xp=xp.module, dtype=xp.dtype)
        if reduce is not LOCAL:
            q = q._replace(factors=xp.asarray(_rows(xp.to_numpy(q.factors), k, axis=1)))
        for d in d_blocks:
            q = core_qng.update(ns, q, xp.asarray(d), decay=DECAY, reduce=reduce)
        half = core_qng.factor_product(q, xp.asarray(g_block), inverse=True, transpose=False, reduce=reduce)
        return q, core_qng.factor_product(q, half, inverse=True, transpose=True, reduce=reduce)

    whole, y_whole = run(0, LOCAL, ds, g)
    shards = _split_run(run, [[_rows(d, k) for d in ds] for k in range(3)], [_rows(g, k) for k in range(3)])
    factors = np.concatenate([xp.to_numpy(q.factors) for q, _ in shards], axis=1)
    f_whole = xp.to_numpy(whole.factors)
    assert np.abs(factors - f_whole).max() <= xp.tol(50) * np.abs(f_whole).max()
    y = np.concatenate([xp.to_numpy(y) for _, y in shards])
    assert np.abs(y - xp.to_numpy(y_whole)).max() <= xp.tol(50) * np.abs(xp.to_numpy(y_whole)).max()
    assert int(xp.to_numpy(shards[2][0].num_nonfinite)) == 1


def test_shard_reduction_gram_reorthonormalization(xp):
    """The Gram-matrix re-orthonormalisation, split over threads, restores UᵀU = I and keeps U Σ Uᵀ."""
    rng = np.random.default_rng(13)
    u = orthonormal(rng, DIM, RANK) + 1e-4 * rng.standard_normal((DIM, RANK))
    lam = np.array([2.0, 0.5, 0.1])
    u, lam = xp.to_numpy(xp.asarray(u)), xp.to_numpy(xp.asarray(lam))

    def run(k, reduce, block):
        return reorthonormalize_gram(xp.ns, xp.asarray(block), xp.asarray(lam), reduce)

    shards = _split_run(run, [_rows(u, k) for k in range(3)])
    basis = np.concatenate([xp.to_numpy(b) for b, _ in shards])
    eigvals = xp.to_numpy(shards[0][1])
    m0 = _dense(u, lam)
    assert np.abs(basis.T @ basis - np.eye(RANK)).max() <= xp.tol(20)
    assert np.abs(_dense(basis, eigvals) - m0).max() <= xp.tol(20) * np.abs(m0).max()
    assert np.all(np.diff(eigvals) <= 0)
    # the same matrix as the QR-based re-orthonormalisation of the whole basis
    qb, ql = lg.reorthonormalize(xp.asarray(u), xp.asarray(lam))
    assert np.abs(_dense(xp.to_numpy(qb), xp.to_numpy(ql)) - _dense(basis, eigvals)).max() <= xp.tol(40) * lam[0]
