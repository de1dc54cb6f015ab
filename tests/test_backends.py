"""Agreement across backends, device placement, and the backend helpers."""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn import backends
from tests._streams import stream


def _ginger_reference(data, decay, rank):
    state = lg.ginger_init(data.shape[1], rank)
    for d in data:
        state = lg.ginger_update(state, d, decay=decay)
    return state


def test_ginger_agrees_with_numpy_float64(xp):
    data = stream(np.random.default_rng(11), 25, 20, "power")
    ref = _ginger_reference(data, 0.95, 4)
    update = xp.maybe_jit(lg.ginger_update)
    state = lg.ginger_init(20, 4, xp=xp.module, dtype=xp.dtype)
    for d in data:
        state = update(state, xp.asarray(d), decay=0.95)
    s = xp.to_numpy(state.eigvals)
    np.testing.assert_allclose(s, ref.eigvals, rtol=xp.tol(500), atol=xp.tol(500) * ref.eigvals[0])
    dense = xp.to_numpy(lg.ginger_dense(state))
    np.testing.assert_allclose(dense, lg.ginger_dense(ref), atol=xp.tol(500) * ref.eigvals[0])
    g = np.random.default_rng(0).standard_normal(20)
    y = xp.to_numpy(lg.ginger_precondition(state, xp.asarray(g), damping=0.1))
    y_ref = lg.ginger_precondition(ref, g, damping=0.1)
    cond = 1 + ref.eigvals[0] / 0.1
    assert np.linalg.norm(y - y_ref) <= xp.tol(500 * cond) * np.linalg.norm(y_ref)


def test_qng_agrees_with_numpy_float64(xp):
    data = stream(np.random.default_rng(12), 12, 15, "power")
    ref = lg.qng_init(15, 4)
    state = lg.qng_init(15, 4, xp=xp.module, dtype=xp.dtype)
    update = xp.maybe_jit(lg.qng_update)
    for d in data:
        ref = lg.qng_update(ref, d, decay=0.9)
        state = update(state, xp.asarray(d), decay=0.9)
    dense_ref = lg.qng_dense(ref)
    np.testing.assert_allclose(xp.to_numpy(lg.qng_dense(state)), dense_ref, atol=xp.tol(500) * np.abs(dense_ref).max())


def test_outputs_follow_dtype(xp):
    state = lg.ginger_init(8, 2, xp=xp.module, dtype=xp.dtype)
    d = xp.asarray(np.arange(8.0))
    state = lg.ginger_update(state, d, decay=0.9)
    for arr in (state.basis, state.eigvals, state.discarded, lg.ginger_precondition(state, d, damping=1.0)):
        assert arr.dtype == xp.dtype
    q = lg.qng_update(lg.qng_init(8, 2, xp=xp.module, dtype=xp.dtype), d, decay=0.9)
    assert lg.qng_precondition(q, d).dtype == xp.dtype


def test_outputs_stay_on_the_input_device():
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    d = strict.asarray(np.arange(1.0, 9.0), device=dev)
    state = lg.ginger_update(lg.ginger_init(8, 2, xp=strict, device=dev), d, decay=0.9)
    sm = lg.ginger_update(state, d, decay=0.9, damping=0.1, method="sherman-morrison", reorthonormalize_every=1)
    q = lg.qng_update(lg.qng_init(8, 2, xp=strict, device=dev), d, decay=0.9)
    outputs = [*state, *sm, *q, lg.ginger_precondition(state, d, damping=0.1), lg.qng_precondition(q, d)]
    outputs += [lg.ginger_dense(state), lg.qng_dense(q), lg.kappa_from_sigma(state.eigvals, 0.1)]
    outputs += list(lg.sherman_morrison_step(state.basis, state.eigvals, d, decay=0.9, damping=0.1))
    for arr in outputs:
        assert arr.device == dev


def test_torch_device_follows_input():
    torch = pytest.importorskip("torch")
    state = lg.ginger_init(8, 2, xp=torch, dtype=torch.float64, device="cpu")
    d = torch.arange(1.0, 9.0, dtype=torch.float64)
    out = lg.ginger_precondition(lg.ginger_update(state, d, decay=0.9), d, damping=0.1)
    assert out.device == d.device
    assert isinstance(out, torch.Tensor)


def test_resolve_namespace_and_names():
    np_ns = backends.resolve_namespace(np)
    assert backends.backend_name(np_ns) == "numpy"
    assert backends.resolve_namespace(None) is np_ns
    assert backends.resolve_namespace(None, np.ones(2)) is np_ns
    torch = pytest.importorskip("torch")
    assert backends.backend_name(backends.resolve_namespace(torch)) == "torch"
    jnp = pytest.importorskip("jax.numpy")
    assert backends.backend_name(backends.resolve_namespace(jnp)) == "jax"


def test_to_numpy_round_trip(xp):
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(backends.to_numpy(xp.asarray(x)), x)


def test_cond_runs_one_branch_eagerly():
    calls = []
    out = backends.cond(np.asarray(True), lambda x: calls.append("t") or x + 1, lambda x: calls.append("f") or x, 1)
    assert out == 2
    assert calls == ["t"]


def test_jax_float64_without_x64_is_a_clear_error():
    """Requesting float64 from JAX with x64 disabled must not silently give float32."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    with jax.enable_x64(False):
        with pytest.raises(TypeError, match="x64"):
            lg.ginger_init(6, 2, xp=jnp, dtype=jnp.float64)
        with pytest.raises(TypeError, match="x64"):
            lg.qng_init(6, 2, xp=jnp, dtype=jnp.float64)
