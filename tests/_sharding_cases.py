"""Sharded Ginger and QNG on 8 simulated CPU devices (run by ``tests/test_sharding.py``).

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts its
CPU backend, so these tests need a fresh process: ``tests/test_sharding.py``
runs this module with ``pytest`` in a subprocess. Run it directly with

    python -m pytest tests/_sharding_cases.py

(it sets the flag itself when JAX has not started yet).
"""

from __future__ import annotations

import functools
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
if jax.device_count() < 8:  # pragma: no cover - JAX had started before the flag was set
    pytest.skip("needs 8 JAX devices: run through tests/test_sharding.py", allow_module_level=True)

import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import lowrank_ggn as lg  # noqa: E402
import lowrank_ggn.sharding as lgs  # noqa: E402

N, RANK, DECAY, DAMPING, EVERY = 8, 4, 0.9, 1e-2, 5
STEPS, NAN_STEP, ZERO_STEP, SPAN_STEP, NEAR_STEP = 12, 3, 5, 6, 7


def _mesh(kind: str = "Explicit", shape: tuple[int, ...] = (N,), names: tuple[str, ...] = ("x",)):
    return jax.make_mesh(shape, names, axis_types=(getattr(AxisType, kind),) * len(shape))


def _put(x, mesh, spec, dtype):
    return jax.device_put(jnp.asarray(x, dtype=dtype), NamedSharding(mesh, spec))


def _laid_out(x, spec):
    """Whether ``x`` is sharded as ``spec`` (``P("x")`` and ``P("x", None)`` are the same layout of a matrix)."""
    return x.sharding.is_equivalent_to(NamedSharding(x.sharding.mesh, spec), x.ndim)


def _tol(dtype, factor):
    return factor * float(jnp.finfo(dtype).eps)


def _dense(state):
    u, s = np.asarray(state.basis, dtype=np.float64), np.asarray(state.eigvals, dtype=np.float64)
    return (u * s) @ u.T


def _stream(dim, seed):
    """Curvature vectors for every branch of the update, with the float64 NumPy reference states."""
    rng = np.random.default_rng(seed)
    state = lg.ginger_init(dim, RANK)
    ds, states = [], []
    for t in range(STEPS):
        if t == NAN_STEP:
            d = rng.standard_normal(dim)
            d[dim // 2 + 1] = np.inf  # on one device only
        elif t == ZERO_STEP:
            d = np.zeros(dim)
        elif t == SPAN_STEP:
            d = state.basis @ rng.standard_normal(RANK)
        elif t == NEAR_STEP:
            d = state.basis @ rng.standard_normal(RANK) + 1e-3 * rng.standard_normal(dim)
        else:
            d = rng.standard_normal(dim) * np.geomspace(1.0, 1e-2, dim)
        ds.append(d)
        state = lg.ginger_update(state, d, decay=DECAY, reorthonormalize_every=EVERY)
        states.append(state)
    return ds, states


# -- Layout -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Explicit", "Auto"])
def test_shard_init_layout_and_values(kind):
    mesh = _mesh(kind)
    state = lgs.ginger_init(64, RANK, mesh=mesh, axis="x", dtype=jnp.float32)
    assert _laid_out(state.basis, P("x", None))
    assert {s.data.shape for s in state.basis.addressable_shards} == {(64 // N, RANK)}
    assert len(state.basis.addressable_shards) == N
    assert state.eigvals.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(state.basis), np.eye(64, RANK))
    q = lgs.qng_init(64, RANK, mesh=mesh, axis="x", dtype=jnp.float32)
    assert _laid_out(q.factors, P(None, "x"))
    assert {s.data.shape for s in q.factors.addressable_shards} == {(RANK, 64 // N)}
    np.testing.assert_array_equal(np.asarray(q.scales), np.ones(RANK))


def test_shard_existing_states_and_two_mesh_axes():
    mesh = _mesh("Explicit", (2, 4), ("data", "model"))
    axis = ("data", "model")
    state = lgs.shard_ginger_state(lg.ginger_init(64, RANK, xp=jnp, dtype=jnp.float32), mesh, axis)
    assert {s.data.shape for s in state.basis.addressable_shards} == {(8, RANK)}
    q = lgs.shard_qng_state(lg.qng_init(64, RANK, xp=jnp, dtype=jnp.float32), mesh, axis)
    assert {s.data.shape for s in q.factors.addressable_shards} == {(RANK, 8)}
    d = _put(np.linspace(-1, 1, 64), mesh, P(axis), jnp.float32)
    state = jax.jit(lambda s, d: lgs.ginger_update(s, d, decay=DECAY, mesh=mesh, axis=axis))(state, d)
    ref = lg.ginger_update(lg.ginger_init(64, RANK), np.linspace(-1, 1, 64), decay=DECAY)
    assert np.abs(_dense(state) - _dense(ref)).max() <= _tol(jnp.float32, 20) * np.abs(_dense(ref)).max()


@pytest.mark.parametrize("kind", ["Explicit", "Auto"])
def test_shard_functions_reshard_other_layouts(kind):
    """A replicated or single-device ``d``, ``g`` or state is resharded on entry; the result is sharded."""
    mesh = _mesh(kind)
    dim = 64
    rng = np.random.default_rng(5)
    d, g = rng.standard_normal(dim), rng.standard_normal(dim)
    ref = lg.ginger_update(lg.ginger_init(dim, RANK), d, decay=DECAY)
    y_ref = lg.ginger_precondition(ref, g, damping=DAMPING)
    state = lg.ginger_init(dim, RANK, xp=jnp, dtype=jnp.float64)  # on one device
    update = jax.jit(lambda s, d: lgs.ginger_update(s, d, decay=DECAY, mesh=mesh, axis="x"))
    for vec in (jnp.asarray(d), _put(d, mesh, P(), jnp.float64)):
        new = update(state, vec)
        assert _laid_out(new.basis, P("x", None))
        # eagerly, too
        y = lgs.ginger_precondition(new, _put(g, mesh, P(), jnp.float64), damping=DAMPING, mesh=mesh, axis="x")
        assert _laid_out(y, P("x"))
        assert np.abs(np.asarray(y) - y_ref).max() <= _tol(jnp.float64, 100) * np.abs(y_ref).max()


def test_shard_functions_reject_bad_input():
    mesh = _mesh()
    with pytest.raises(ValueError, match="multiple of the 8 devices"):
        lgs.ginger_init(60, RANK, mesh=mesh, axis="x")
    with pytest.raises(ValueError, match="not axes of the mesh"):
        lgs.ginger_init(64, RANK, mesh=mesh, axis="y")
    with pytest.raises(TypeError, match="mesh must be"):
        lgs.ginger_sharding("x", "x")
    with pytest.raises(ValueError, match="rank must be smaller"):
        lgs.qng_init(64, 64, mesh=mesh, axis="x")
    with pytest.raises(TypeError, match="JAX array"):
        lgs.shard_ginger_state(lg.ginger_init(64, RANK), mesh, "x")
    state = lgs.ginger_init(64, RANK, mesh=mesh, axis="x")
    d = jnp.ones(64, dtype=state.basis.dtype)
    with pytest.raises(ValueError, match="decay"):
        lgs.ginger_update(state, d, decay=1.0, mesh=mesh, axis="x")
    with pytest.raises(ValueError, match="damping"):
        lgs.ginger_precondition(state, d, damping=-1.0, mesh=mesh, axis="x")
    with pytest.raises(ValueError, match="d must have shape"):
        lgs.ginger_update(state, d[:8], decay=0.5, mesh=mesh, axis="x")


# -- Equality with one device ---------------------------------------------------------


@pytest.mark.parametrize(("kind", "dtype"), [("Explicit", "float64"), ("Explicit", "float32"), ("Auto", "float64")])
def test_sharded_ginger_matches_single_device(kind, dtype):
    dtype = getattr(jnp, dtype)
    mesh, dim = _mesh(kind), 8 * 6
    ds, ref_states = _stream(dim, seed=1)
    update = jax.jit(
        lambda s, d: lgs.ginger_update(s, d, decay=DECAY, mesh=mesh, axis="x", reorthonormalize_every=EVERY)
    )
    state = lgs.ginger_init(dim, RANK, mesh=mesh, axis="x", dtype=dtype)
    for d, ref in zip(ds, ref_states, strict=True):
        state = update(state, _put(d, mesh, P("x"), dtype))
        m_ref = _dense(ref)
        assert np.abs(_dense(state) - m_ref).max() <= _tol(dtype, 100) * max(np.abs(m_ref).max(), 1.0)
    ref = ref_states[-1]
    assert _laid_out(state.basis, P("x", None))
    assert {s.data.shape for s in state.basis.addressable_shards} == {(dim // N, RANK)}
    np.testing.assert_allclose(np.asarray(state.eigvals), ref.eigvals, rtol=_tol(dtype, 100), atol=_tol(dtype, 100))
    assert float(state.discarded) == pytest.approx(float(ref.discarded), rel=_tol(dtype, 100))
    assert int(state.step) == int(ref.step) == STEPS - 1
    assert int(state.num_nonfinite) == int(ref.num_nonfinite) == 1
    u = np.asarray(state.basis, dtype=np.float64)
    assert np.abs(u.T @ u - np.eye(RANK)).max() <= _tol(dtype, 20)

    rng = np.random.default_rng(2)
    for g in (rng.standard_normal(dim), rng.standard_normal((dim, 3))):
        spec = P("x") if g.ndim == 1 else P("x", None)
        y = jax.jit(lambda s, g: lgs.ginger_precondition(s, g, damping=DAMPING, mesh=mesh, axis="x"))(
            state, _put(g, mesh, spec, dtype)
        )
        y_ref = lg.ginger_precondition(ref, g, damping=DAMPING)
        assert _laid_out(y, spec)
        assert np.abs(np.asarray(y, dtype=np.float64) - y_ref).max() <= _tol(dtype, 100) * np.abs(y_ref).max()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sharded_reorthonormalize_keeps_the_matrix(dtype):
    dtype = getattr(jnp, dtype)
    mesh, dim = _mesh(), 8 * 6
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((dim, RANK)))
    basis = q + 1e-4 * rng.standard_normal((dim, RANK))  # drifted away from orthonormality
    eigvals = np.array([3.0, 1.0, 0.5, 0.1])
    state = lg.GingerState(*(jnp.asarray(x, dtype=dtype) for x in (basis, eigvals, 0.0, 0.0)), jnp.int32(7), jnp.int32(0))
    state = lgs.shard_ginger_state(state, mesh, "x")
    out = jax.jit(lambda s: lgs.ginger_reorthonormalize(s, mesh=mesh, axis="x"))(state)
    m0 = (basis * eigvals) @ basis.T
    assert np.abs(_dense(out) - m0).max() <= _tol(dtype, 20) * np.abs(m0).max()
    u = np.asarray(out.basis, dtype=np.float64)
    assert np.abs(u.T @ u - np.eye(RANK)).max() <= _tol(dtype, 20)
    assert int(out.step) == 7
    assert _laid_out(out.basis, P("x", None))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sharded_qng_matches_single_device(dtype):
    dtype = getattr(jnp, dtype)
    mesh, dim = _mesh(), 8 * 6
    rng = np.random.default_rng(4)
    update = jax.jit(lambda s, d: lgs.qng_update(s, d, decay=DECAY, mesh=mesh, axis="x"))
    state = lgs.qng_init(dim, RANK, mesh=mesh, axis="x", dtype=dtype)
    ref = lg.qng_init(dim, RANK)
    for t in range(RANK + 3):
        d = rng.standard_normal(dim)
        if t == 2:
            d[-1] = np.nan
        state = update(state, _put(d, mesh, P("x"), dtype))
        ref = lg.qng_update(ref, d, decay=DECAY)
    f = np.asarray(state.factors, dtype=np.float64)
    assert np.abs(f - ref.factors).max() <= _tol(dtype, 50) * np.abs(ref.factors).max()
    np.testing.assert_allclose(np.asarray(state.betas), ref.betas, rtol=_tol(dtype, 50))
    assert int(state.num_nonfinite) == 1
    assert _laid_out(state.factors, P(None, "x"))
    g = rng.standard_normal(dim)
    y = jax.jit(lambda s, g: lgs.qng_precondition(s, g, mesh=mesh, axis="x"))(state, _put(g, mesh, P("x"), dtype))
    y_ref = lg.qng_precondition(ref, g)
    assert np.abs(np.asarray(y, dtype=np.float64) - y_ref).max() <= _tol(dtype, 50) * np.abs(y_ref).max()


# -- Blocks given as parameter arrays ----------------------------------------------------


def _device_order(shapes):
    """Index of each entry of the arrays' concatenation in the order the devices hold them."""
    offsets = np.cumsum([0, *(int(np.prod(sh)) for sh in shapes)])
    order = []
    for k in range(N):
        for sh, off in zip(shapes, offsets[:-1], strict=True):
            per = int(np.prod(sh)) // N
            order.extend(range(off + k * per, off + (k + 1) * per))
    return np.array(order)


@pytest.mark.parametrize("kind", ["Explicit", "Auto"])
def test_shard_leaves_functions_match_the_vector_in_device_order(kind):
    mesh, dtype = _mesh(kind), jnp.float64
    shapes = [(16, 3), (8,), (8, 2, 2)]  # the first axis of each is a multiple of 8
    order = _device_order(shapes)
    dim = order.size
    rng = np.random.default_rng(6)

    def leaves(vec):
        parts = np.split(vec, np.cumsum([int(np.prod(sh)) for sh in shapes])[:-1])
        specs = [P("x", *([None] * (len(sh) - 1))) for sh in shapes]
        return [_put(p.reshape(sh), mesh, spec, dtype) for p, sh, spec in zip(parts, shapes, specs, strict=True)]

    kw = {"mesh": mesh, "axis": "x"}
    update = jax.jit(lambda s, d: lgs.ginger_update_leaves(s, d, decay=DECAY, reorthonormalize_every=3, **kw))
    q_update = jax.jit(lambda s, d: lgs.qng_update_leaves(s, d, decay=DECAY, **kw))
    state = lgs.ginger_init(dim, RANK, mesh=mesh, axis="x", dtype=dtype)
    q = lgs.qng_init(dim, RANK, mesh=mesh, axis="x", dtype=dtype)
    ref = lg.ginger_init(dim, RANK)
    q_ref = lg.qng_init(dim, RANK)
    for _ in range(6):
        d = rng.standard_normal(dim)
        state, q = update(state, leaves(d)), q_update(q, leaves(d))
        # the state's rows are the entries in device order
        ref = lg.ginger_update(ref, d[order], decay=DECAY, reorthonormalize_every=3)
        q_ref = lg.qng_update(q_ref, d[order], decay=DECAY)
    m_ref = _dense(ref)
    assert np.abs(_dense(state) - m_ref).max() <= _tol(dtype, 100) * np.abs(m_ref).max()
    g = rng.standard_normal(dim)
    ys = lgs.ginger_precondition_leaves(state, leaves(g), damping=DAMPING, **kw)
    y_ref = np.empty(dim)
    y_ref[order] = lg.ginger_precondition(ref, g[order], damping=DAMPING)
    y = np.concatenate([np.ravel(np.asarray(x)) for x in ys])
    assert [x.shape for x in ys] == shapes
    assert all(_laid_out(x, P("x", *([None] * (x.ndim - 1)))) for x in ys)
    assert np.abs(y - y_ref).max() <= _tol(dtype, 100) * np.abs(y_ref).max()
    qs = lgs.qng_precondition_leaves(q, leaves(g), **kw)
    y_ref[order] = lg.qng_precondition(q_ref, g[order])
    y = np.concatenate([np.ravel(np.asarray(x)) for x in qs])
    assert np.abs(y - y_ref).max() <= _tol(dtype, 100) * np.abs(y_ref).max()


def test_shard_leaves_functions_reject_bad_blocks():
    mesh = _mesh()
    state = lgs.ginger_init(64, RANK, mesh=mesh, axis="x", dtype=jnp.float32)
    assert lgs.splittable((16, 4), mesh, "x")
    assert not lgs.splittable((6, 4), mesh, "x")
    assert not lgs.splittable((), mesh, "x")
    with pytest.raises(ValueError, match="first axis must be a positive multiple of the 8 devices"):
        lgs.ginger_update_leaves(state, [jnp.ones((6, 8)), jnp.ones(16)], decay=0.5, mesh=mesh, axis="x")
    with pytest.raises(ValueError, match="holds 56 numbers but the state has dim = 64"):
        lgs.ginger_precondition_leaves(state, [jnp.ones((8, 6)), jnp.ones(8)], damping=1.0, mesh=mesh, axis="x")
    with pytest.raises(TypeError, match="non-empty list"):
        lgs.qng_precondition_leaves(lgs.qng_init(64, RANK, mesh=mesh, axis="x"), [], mesh=mesh, axis="x")


# -- What is communicated, and what each device holds -----------------------------------


@functools.cache
def _programs(dim, mesh, dtype=jnp.float32):
    """The compiled sharded programs for one ``dim``, from abstract arguments (nothing is allocated)."""
    gs = lgs.ginger_sharding(mesh, "x")
    qs = lgs.qng_sharding(mesh, "x")
    vec = jax.ShapeDtypeStruct((dim,), dtype, sharding=NamedSharding(mesh, P("x")))
    ginger = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.eval_shape(lambda: lg.ginger_init(dim, RANK, xp=jnp, dtype=dtype)),
        gs,
    )
    qng = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.eval_shape(lambda: lg.qng_init(dim, RANK, xp=jnp, dtype=dtype)),
        qs,
    )
    kw = {"mesh": mesh, "axis": "x"}
    fns = {
        # Without re-orthonormalisation (the float32 default, "auto", re-orthonormalises every 100 updates;
        # its Gram matrix is measured by ginger_update_reorth).
        "ginger_update": (
            lambda s, d: lgs.ginger_update(s, d, decay=DECAY, reorthonormalize_every=None, **kw),
            (ginger, vec),
        ),
        "ginger_update_reorth": (
            lambda s, d: lgs.ginger_update(s, d, decay=DECAY, reorthonormalize_every=EVERY, **kw),
            (ginger, vec),
        ),
        "ginger_precondition": (lambda s, g: lgs.ginger_precondition(s, g, damping=DAMPING, **kw), (ginger, vec)),
        "qng_update": (lambda s, d: lgs.qng_update(s, d, decay=DECAY, **kw), (qng, vec)),
        "qng_precondition": (lambda s, g: lgs.qng_precondition(s, g, **kw), (qng, vec)),
    }
    # The updates donate the state, as a training loop does: the new state overwrites the old one.
    return {
        name: jax.jit(f, donate_argnums=0 if "update" in name else ()).lower(*args).compile()
        for name, (f, args) in fns.items()
    }


# The most numbers one step may all-reduce: a few τ-vectors and scalars; τ² for the Gram matrix.
_BUDGET = {
    "ginger_update": 2 * RANK + 5,
    "ginger_update_reorth": RANK * RANK + 2 * RANK + 5,
    "ginger_precondition": RANK,
    "qng_update": RANK + 2,
    "qng_precondition": 2 * RANK,
}


def test_shard_communication_is_O_tau_and_independent_of_dim():
    mesh = _mesh()
    small, large = _programs(8 * 64, mesh), _programs(8 * 4096, mesh)
    for name, budget in _BUDGET.items():
        found = lgs.collectives(large[name])
        assert found, f"{name}: no collective at all (is the program really sharded?)"
        assert {c.kind for c in found} == {"all-reduce"}, (name, found)
        assert not any(c.in_loop for c in found), (name, found)
        total = sum(c.nbytes for c in found)
        assert total <= budget * 4, (name, total, found)  # float32: 4 bytes a number
        assert total == sum(c.nbytes for c in lgs.collectives(small[name])), name


def test_shard_per_device_memory_is_dim_rank_over_n():
    mesh = _mesh()
    dim = 8 * 4096
    programs = _programs(dim, mesh)
    per_device_basis = dim * RANK * 4 // N
    for name in ("ginger_update", "ginger_update_reorth", "ginger_precondition", "qng_update"):
        mem = programs[name].memory_analysis()
        # arguments: the state's block of U (or of the factors), the block of d and a few scalars.
        assert per_device_basis <= mem.argument_size_in_bytes <= per_device_basis + 4 * dim // N + 4096, name
        # temporaries: a few d/n-vectors and copies of the block, never the whole of U.
        assert mem.temp_size_in_bytes <= 3 * per_device_basis + 4096, (name, mem)
    # with the state donated, the new state is written over the old one
    assert programs["ginger_update"].memory_analysis().alias_size_in_bytes >= per_device_basis


def test_shard_checker_detects_a_gather_of_U():
    """The naive program (QR of an auto-sharded U) all-gathers U: the checks above can fail."""
    mesh = _mesh("Auto")
    state = lgs.ginger_init(8 * 64, RANK, mesh=mesh, axis="x", dtype=jnp.float32)
    compiled = jax.jit(lg.ginger_reorthonormalize).lower(state).compile()
    found = lgs.collectives(compiled)
    assert max(c.nbytes for c in found) >= 8 * 64 * RANK * 4


# -- The optax transformations under jax.jit with sharded parameters and states -----------


@pytest.mark.parametrize(("kind", "method"), [("Explicit", "ginger"), ("Auto", "ginger"), ("Explicit", "qng")])
def test_sharded_optax_under_jit_matches_one_device(kind, method):
    optax = pytest.importorskip("optax")
    from lowrank_ggn.optim import optax as lgo

    mesh, dtype = _mesh(kind), jnp.float64
    rng = np.random.default_rng(7)
    shapes = {"w1": (32, 6), "w2": (16, 4), "b": (6,), "scale": ()}  # b and scale cannot be split over 8
    specs = {"w1": P("x", None), "w2": P("x", None), "b": P(), "scale": P()}

    def tree(values, sharded):
        return {
            k: _put(v, mesh, specs[k], dtype) if sharded else jnp.asarray(v, dtype=dtype) for k, v in values.items()
        }

    def make(**kw):
        if method == "ginger":
            return lgo.ginger(0.1, rank=RANK, damping=0.5, reorthonormalize_every=3, **kw)
        return lgo.qng(0.1, rank=RANK, **kw)

    def stepper(tx):
        def step(params, state, grads, curvature):
            updates, state = tx.update(grads, state, params, curvature=curvature)
            return optax.apply_updates(params, updates), state

        return jax.jit(step, donate_argnums=(0, 1))

    start = {k: rng.standard_normal(s) for k, s in shapes.items()}
    params, params1 = tree(start, sharded=True), tree(start, sharded=False)
    tx, tx1 = make(mesh=mesh, axis="x"), make()
    state, state1 = tx.init(params), tx1.init(params1)
    step, step1 = stepper(tx), stepper(tx1)
    for t in range(5):
        grads = {k: rng.standard_normal(s) for k, s in shapes.items()}
        curv = {k: rng.standard_normal(s) for k, s in shapes.items()}
        if t == 0:
            compiled = step.lower(params, state, tree(grads, sharded=True), tree(curv, sharded=True)).compile()
        params, state = step(params, state, tree(grads, sharded=True), tree(curv, sharded=True))
        params1, state1 = step1(params1, state1, tree(grads, sharded=False), tree(curv, sharded=False))
    for k in shapes:
        ref = np.asarray(params1[k])
        assert np.abs(np.asarray(params[k]) - ref).max() <= _tol(dtype, 1000) * max(np.abs(ref).max(), 1.0), k
        assert _laid_out(params[k], specs[k]), k
    # the states of the split blocks are sharded along dim, the others replicated
    blocks = state[0].blocks
    field = "basis" if method == "ginger" else "factors"
    split_spec = P("x", None) if method == "ginger" else P(None, "x")
    laid = [_laid_out(getattr(b, field), split_spec) for b in blocks if b is not None]
    assert sorted(laid) == [False, True, True]
    # one compiled step: only small all-reduces, whatever the parameter sizes (XLA may combine the
    # independent all-reduces of the two split blocks' fused steps, 2τ + 2 numbers each, into one)
    found = lgs.collectives(compiled)
    assert {c.kind for c in found} == {"all-reduce"}, found
    assert max(c.nbytes for c in found) <= 2 * RANK * RANK * 8, found
