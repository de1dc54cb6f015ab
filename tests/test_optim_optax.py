"""The optax front-end: dense references, jit, options, blocking, checkpoints, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests._optim_reference import DenseGinger, DenseQNG

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax")
lgo = pytest.importorskip("lowrank_ggn.optim.optax")

pytestmark = pytest.mark.backend_jax


@pytest.fixture(autouse=True)
def _x64():
    jax.config.update("jax_enable_x64", True)


def _params(rng, dtype=np.float64):
    return {"w": jnp.asarray(rng.standard_normal((3, 4)), dtype), "b": jnp.asarray(rng.standard_normal(5), dtype)}


def _like(rng, params, scale=1.0):
    return jax.tree.map(lambda p: jnp.asarray(scale * rng.standard_normal(p.shape), p.dtype), params)


def _flat(tree, leaves_idx=None):
    leaves = jax.tree.leaves(tree)
    idx = range(len(leaves)) if leaves_idx is None else leaves_idx
    return np.concatenate([np.asarray(leaves[i], np.float64).ravel() for i in idx])


def _close(a, b, tol=1e-10):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(b)))))


# ---------------------------------------------------------------------------------------------
# dense references


@pytest.mark.parametrize("blocks", ["model", "leaf"])
def test_ginger_update_equals_dense_solve(blocks):
    """updates = −lr (γI + M_t)⁻¹ g_t, with M_t the rank-τ truncated EMA, block by block."""
    rng = np.random.default_rng(1)
    params = _params(rng)
    lr, gamma, alpha, rank = 0.3, 0.05, 0.8, 2
    tx = lgo.ginger(lr, rank=rank, decay=alpha, damping=gamma, momentum=None, blocks=blocks)
    state = tx.init(params)
    partition = lgo.block_partition(params, blocks)
    dense = [DenseGinger(len(_flat(params, idx)), rank) for idx in partition]
    for _ in range(6):  # more steps than the rank: truncation is exercised
        g, d = _like(rng, params), _like(rng, params, 2.0)
        updates, state = tx.update(g, state, params, curvature=d)
        for idx, ref in zip(partition, dense, strict=True):
            ref.update(_flat(d, idx), alpha)
            _close(_flat(updates, idx), -lr * ref.solve(_flat(g, idx), gamma))


@pytest.mark.parametrize("blocks", ["model", "leaf"])
def test_qng_update_equals_dense_solve(blocks):
    """updates = −lr (ÂÂᵀ)⁻¹ g_t with the window of the last τ factors."""
    rng = np.random.default_rng(2)
    params = _params(rng)
    lr, alpha, rank = 0.2, 0.7, 2
    tx = lgo.qng(lr, rank=rank, decay=alpha, momentum=None, blocks=blocks)
    state = tx.init(params)
    partition = lgo.block_partition(params, blocks)
    dense = [DenseQNG(len(_flat(params, idx)), rank) for idx in partition]
    for _ in range(5):
        g, d = _like(rng, params), _like(rng, params)
        updates, state = tx.update(g, state, params, curvature=d)
        for idx, ref in zip(partition, dense, strict=True):
            ref.update(_flat(d, idx), alpha)
            _close(_flat(updates, idx), -lr * ref.solve(_flat(g, idx)), 1e-9)


def test_user_defined_groups_and_callable_labels():
    rng = np.random.default_rng(3)
    params = {
        "a": jnp.asarray(rng.standard_normal(4)),
        "b": jnp.asarray(rng.standard_normal(3)),
        "c": jnp.asarray(rng.standard_normal(2)),
    }
    labels = {"a": "x", "b": "y", "c": "x"}
    assert lgo.block_partition(params, labels) == [[0, 2], [1]]
    assert lgo.block_partition(params, lambda p: labels) == [[0, 2], [1]]
    assert lgo.block_partition(params, "model") == [[0, 1, 2]]
    assert lgo.block_partition(params, "leaf") == [[0], [1], [2]]
    tx = lgo.scale_by_ginger(rank=2, decay=0.9, damping=0.1, blocks=labels)
    state = tx.init(params)
    assert [s.basis.shape for s in state.blocks] == [(6, 2), (3, 2)]
    ref = DenseGinger(6, 2)
    for _ in range(4):
        g, d = _like(rng, params), _like(rng, params)
        u, state = tx.update(g, state, curvature=d)
        ref.update(_flat(d, [0, 2]), 0.9)
        _close(_flat(u, [0, 2]), ref.solve(_flat(g, [0, 2]), 0.1))


def test_rank_is_clamped_and_scalar_blocks_pass_through():
    params = {"s": jnp.asarray(2.0), "v": jnp.ones(3), "w": jnp.ones((4, 4))}
    tx = lgo.scale_by_ginger(rank=8, damping=0.5)
    state = tx.init(params)
    shapes = [None if s is None else s.basis.shape for s in state.blocks]
    assert shapes == [None, (3, 2), (16, 8)]
    g = {"s": jnp.asarray(3.0), "v": jnp.ones(3), "w": jnp.ones((4, 4))}
    u, _ = tx.update(g, state)
    assert float(u["s"]) == pytest.approx(3.0 / 0.5)
    tq = lgo.scale_by_qng(rank=8)
    uq, sq = tq.update(g, tq.init(params))
    assert float(uq["s"]) == 3.0
    assert sq.blocks[0] is None


# ---------------------------------------------------------------------------------------------
# jit, fallback, options


@pytest.mark.parametrize("make", [lambda: lgo.ginger(0.1, rank=2, damping=0.1), lambda: lgo.qng(0.1, rank=2)])
def test_jit_matches_eager(make):
    rng = np.random.default_rng(4)
    params = _params(rng)
    tx = make()
    s_eager = s_jit = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(3):
        g, d = _like(rng, params), _like(rng, params)
        u_e, s_eager = tx.update(g, s_eager, params, curvature=d)
        u_j, s_jit = update(g, s_jit, params, curvature=d)
        for a, b in zip(jax.tree.leaves(u_e), jax.tree.leaves(u_j), strict=True):
            _close(np.asarray(b), np.asarray(a))


@pytest.mark.parametrize("make", [lambda: lgo.ginger(0.1, rank=2, damping=0.1), lambda: lgo.qng(0.1, rank=2)])
def test_without_curvature_the_gradient_is_used(make):
    rng = np.random.default_rng(5)
    params = _params(rng)
    tx = make()
    s1 = s2 = tx.init(params)
    for _ in range(3):
        g = _like(rng, params)
        u1, s1 = tx.update(g, s1, params)
        u2, s2 = tx.update(g, s2, params, curvature=g)
        _close(_flat(u1), _flat(u2), 0)


def test_update_every_skips_curvature_updates():
    rng = np.random.default_rng(6)
    params = {"w": jnp.asarray(rng.standard_normal(6))}
    tx = lgo.scale_by_ginger(rank=2, decay=0.9, damping=0.2, update_every=3)
    state = tx.init(params)
    ref = DenseGinger(6, 2)
    for t in range(7):
        g, d = _like(rng, params), _like(rng, params)
        u, state = tx.update(g, state, curvature=d)
        if t % 3 == 0:
            ref.update(_flat(d), 0.9)
        _close(_flat(u), ref.solve(_flat(g), 0.2))
    assert int(state.blocks[0].step) == 3  # steps 0, 3, 6
    assert int(state.count) == 7


def test_damping_schedule_is_applied_per_step():
    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.standard_normal(5))}
    schedule = optax.exponential_decay(1.0, transition_steps=1, decay_rate=0.5)
    tx = jax.jit(lgo.scale_by_ginger(rank=2, decay=0.9, damping=schedule).update)
    state = lgo.scale_by_ginger(rank=2, decay=0.9, damping=schedule).init(params)
    ref = DenseGinger(5, 2)
    for t in range(4):
        g, d = _like(rng, params), _like(rng, params)
        u, state = tx(g, state, curvature=d)
        ref.update(_flat(d), 0.9)
        _close(_flat(u), ref.solve(_flat(g), 0.5**t))


def test_learning_rate_schedule_momentum_and_weight_decay():
    """θ ← θ − η_t (m_t + λθ), m_t = μ m_{t−1} + u_t, weight decay masked."""
    rng = np.random.default_rng(8)
    params = _params(rng)
    mu, wd, gamma = 0.9, 0.1, 0.3
    schedule = optax.linear_schedule(0.5, 0.1, transition_steps=4)
    mask = {"w": True, "b": False}
    tx = lgo.ginger(schedule, rank=2, decay=0.9, damping=gamma, momentum=mu, weight_decay=wd, mask=mask, blocks="model")
    state = tx.init(params)
    ref = DenseGinger(17, 2)
    m = np.zeros(17)
    decay_mask = np.concatenate([np.zeros(5), np.ones(12)])  # leaves in order b, w
    for t in range(5):
        g, d = _like(rng, params), _like(rng, params)
        updates, state = tx.update(g, state, params, curvature=d)
        ref.update(_flat(d), 0.9)
        m = mu * m + ref.solve(_flat(g), gamma)
        expected = -float(schedule(t)) * (m + wd * decay_mask * _flat(params))
        _close(_flat(updates), expected, 1e-7)  # optax schedules evaluate in float32
        params = optax.apply_updates(params, updates)


def test_nesterov_momentum():
    rng = np.random.default_rng(9)
    params = {"w": jnp.asarray(rng.standard_normal(4))}
    tx = lgo.qng(0.1, rank=2, decay=0.9, momentum=0.5, nesterov=True)
    state = tx.init(params)
    ref, m = DenseQNG(4, 2), np.zeros(4)
    for _ in range(3):
        g, d = _like(rng, params), _like(rng, params)
        u, state = tx.update(g, state, params, curvature=d)
        ref.update(_flat(d), 0.9)
        v = ref.solve(_flat(g))
        m = 0.5 * m + v
        _close(_flat(u), -0.1 * (v + 0.5 * m), 1e-9)


@pytest.mark.parametrize("state_dtype", [None, jnp.float64, jnp.float32])
def test_state_dtype(state_dtype):
    rng = np.random.default_rng(10)
    params = _params(rng, np.float32)
    for tx in (lgo.scale_by_ginger(rank=2, state_dtype=state_dtype), lgo.scale_by_qng(rank=2, state_dtype=state_dtype)):
        state = tx.init(params)
        want = jnp.float32 if state_dtype is None else state_dtype
        for block in state.blocks:
            assert jax.tree.leaves(block)[0].dtype == want
        u, state = jax.jit(tx.update)(_like(rng, params), state, curvature=_like(rng, params))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(u))
        assert jax.tree.leaves(state.blocks[0])[0].dtype == want


def test_reorthonormalize_every_keeps_the_basis_orthonormal_and_the_updates():
    rng = np.random.default_rng(14)
    params = {"w": jnp.asarray(rng.standard_normal(40), jnp.float32)}
    plain = lgo.scale_by_ginger(rank=3, damping=0.1, reorthonormalize_every=None)
    reorth = lgo.scale_by_ginger(rank=3, damping=0.1, reorthonormalize_every=2)
    s1, s2 = plain.init(params), reorth.init(params)
    for _ in range(5):
        g, d = _like(rng, params), _like(rng, params)
        u1, s1 = plain.update(g, s1, curvature=d)
        u2, s2 = reorth.update(g, s2, curvature=d)
        _close(_flat(u2), _flat(u1), 1e-4)
    basis = np.asarray(s2.blocks[0].basis, np.float64)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-6)


def test_bfloat16_parameters_keep_a_float32_state():
    params = {"w": jnp.ones(6, jnp.bfloat16)}
    tx = lgo.scale_by_ginger(rank=2)
    state = tx.init(params)
    assert state.blocks[0].basis.dtype == jnp.float32
    u, _ = tx.update({"w": jnp.ones(6, jnp.bfloat16)}, state)
    assert u["w"].dtype == jnp.bfloat16


def test_nonfinite_curvature_leaves_the_block_unchanged_and_is_counted():
    rng = np.random.default_rng(11)
    params = _params(rng)
    for tx in (lgo.scale_by_ginger(rank=2), lgo.scale_by_qng(rank=2)):
        state = tx.init(params)
        state = tx.update(_like(rng, params), state, curvature=_like(rng, params))[1]
        bad = _like(rng, params)
        bad["w"] = bad["w"].at[1, 2].set(jnp.nan)
        new = jax.jit(tx.update)(_like(rng, params), state, curvature=bad)[1]
        # leaves are ordered b, w: block 1 is "w"
        assert int(new.blocks[1].num_nonfinite) == 1
        for a, b in zip(jax.tree.leaves(new.blocks[1])[:-1], jax.tree.leaves(state.blocks[1])[:-1], strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert int(new.blocks[0].num_nonfinite) == 0
        assert int(new.blocks[0].step) == int(state.blocks[0].step) + 1


# ---------------------------------------------------------------------------------------------
# checkpoint → resume


@pytest.mark.parametrize(
    "make", [lambda: lgo.ginger(0.05, rank=3, damping=0.1, weight_decay=1e-3), lambda: lgo.qng(0.05, rank=3)]
)
def test_checkpoint_resume_gives_the_same_trajectory(make):
    rng = np.random.default_rng(12)
    params0 = _params(rng, np.float32)
    grads = [(_like(rng, params0), _like(rng, params0)) for _ in range(10)]
    tx = make()

    @jax.jit
    def step(p, s, g, d):
        u, s = tx.update(g, s, p, curvature=d)
        return optax.apply_updates(p, u), s

    def run(params, state, chunk):
        for g, d in chunk:
            params, state = step(params, state, g, d)
        return params, state

    p_full, _ = run(params0, tx.init(params0), grads)
    p_half, s_half = run(params0, tx.init(params0), grads[:6])
    blob = pickle.dumps(jax.tree.map(np.asarray, (p_half, s_half)))  # to host and back, as a checkpoint
    p_back, s_back = jax.tree.map(jnp.asarray, pickle.loads(blob))  # noqa: S301
    p_resumed, _ = run(p_back, s_back, grads[6:])
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rank": 0}, ValueError, "rank"),
        ({"rank": 2.5}, TypeError, "rank"),
        ({"rank": True}, TypeError, "rank"),
        ({"decay": 1.0}, ValueError, "decay"),
        ({"decay": 0.0}, ValueError, "decay"),
        ({"decay": float("nan")}, ValueError, "decay"),
        ({"damping": 0.0}, ValueError, "damping"),
        ({"damping": -1.0}, ValueError, "damping"),
        ({"damping": float("inf")}, ValueError, "damping"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"update_every": 1.5}, TypeError, "update_every"),
        ({"reorthonormalize_every": 0}, ValueError, "reorthonormalize_every"),
        ({"blocks": "layer"}, ValueError, "blocks"),
    ],
)
def test_bad_options_of_scale_by_ginger(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lgo.scale_by_ginger(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay"),
        ({"rank": 0}, ValueError, "rank"),
        ({"decay": 2.0}, ValueError, "decay"),
    ],
)
def test_bad_options_of_the_aliases(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lgo.ginger(0.1, **kwargs)
    with pytest.raises(exc, match=match):
        lgo.qng(0.1, **kwargs)


def test_bad_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        lgo.ginger(-0.1)
    with pytest.raises(TypeError, match="learning_rate"):
        lgo.qng("0.1")


def test_bad_curvature_and_structure():
    rng = np.random.default_rng(13)
    params = _params(rng)
    tx = lgo.scale_by_ginger(rank=2)
    state = tx.init(params)
    g = _like(rng, params)
    with pytest.raises(ValueError, match="curvature"):
        tx.update(g, state, curvature={"w": g["w"]})
    with pytest.raises(ValueError, match="curvature"):
        tx.update(g, state, curvature={"w": g["w"], "b": jnp.ones(4)})
    other = {"w": g["w"], "b": g["b"], "c": jnp.ones(3)}
    with pytest.raises(ValueError, match="blocks"):
        tx.update(other, state)
    with pytest.raises(ValueError, match="labels"):
        lgo.block_partition(params, {"w": "a"})
    with pytest.raises(TypeError, match="hashable"):
        lgo.block_partition(params, {"w": ["a"], "b": ["b"]})
    with pytest.raises(TypeError, match="floating"):
        tx.init({"i": jnp.arange(4)})


def test_nonfinite_gradient_gives_nonfinite_update_but_a_clean_state():
    """The update follows the gradient (as every optax optimiser); optax.apply_if_finite skips it."""
    params = {"w": jnp.ones(4)}
    tx = lgo.scale_by_ginger(rank=2)
    state = tx.init(params)
    g = {"w": jnp.asarray([1.0, jnp.inf, 0.0, 1.0])}
    u, new = tx.update(g, state)
    assert not np.all(np.isfinite(np.asarray(u["w"])))
    assert int(new.blocks[0].num_nonfinite) == 1
    safe = optax.apply_if_finite(lgo.ginger(0.1, rank=2), max_consecutive_errors=3)
    s = safe.init(params)
    u, s = safe.update(g, s, params)
    np.testing.assert_array_equal(np.asarray(u["w"]), 0.0)
