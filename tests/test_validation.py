"""Bad input gets a clear error that names the argument; nothing is silently corrupted."""

from __future__ import annotations

import numpy as np
import pytest

import lowrank_ggn as lg


@pytest.fixture
def state(xp):
    s = lg.ginger_init(6, 2, xp=xp.module, dtype=xp.dtype)
    return lg.ginger_update(s, xp.asarray(np.arange(1.0, 7.0)), decay=0.9)


@pytest.fixture
def qstate(xp):
    return lg.qng_init(6, 2, xp=xp.module, dtype=xp.dtype)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5, np.nan, np.inf])
def test_decay_outside_open_unit_interval(xp, state, qstate, decay):
    d = xp.asarray(np.ones(6))
    with pytest.raises(ValueError, match="decay"):
        lg.ginger_update(state, d, decay=decay)
    with pytest.raises(ValueError, match="decay"):
        lg.ginger_update(state, d, decay=decay, damping=1.0, method="sherman-morrison")
    with pytest.raises(ValueError, match="decay"):
        lg.qng_update(qstate, d, decay=decay)
    with pytest.raises(ValueError, match="decay"):
        lg.sherman_morrison_step(state.basis, state.eigvals, d, decay=decay, damping=1.0)


@pytest.mark.parametrize("decay", [True, "0.9", None])
def test_decay_of_wrong_type(state, xp, decay):
    with pytest.raises(TypeError, match="decay"):
        lg.ginger_update(state, xp.asarray(np.ones(6)), decay=decay)


@pytest.mark.parametrize("damping", [0.0, -1.0, np.nan, np.inf, -np.inf])
def test_damping_not_positive_finite(xp, state, damping):
    g = xp.asarray(np.ones(6))
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_precondition(state, g, damping=damping)
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_update(state, g, decay=0.9, damping=damping, method="sherman-morrison")
    with pytest.raises(ValueError, match="damping"):
        lg.damped_solve(state.basis, state.eigvals, g, damping=damping)
    with pytest.raises(ValueError, match="damping"):
        lg.damped_matvec(state.basis, state.eigvals, g, damping=damping)
    with pytest.raises(ValueError, match="damping"):
        lg.kappa_from_sigma(state.eigvals, damping)
    with pytest.raises(ValueError, match="damping"):
        lg.sigma_from_kappa(state.eigvals, damping)


def test_damping_as_array_is_checked_when_concrete(xp, state):
    g = xp.asarray(np.ones(6))
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_precondition(state, g, damping=xp.asarray(np.array(-1.0)))
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_precondition(state, g, damping=xp.asarray(np.ones(2)))
    out = lg.ginger_precondition(state, g, damping=xp.asarray(np.array(0.5)))
    np.testing.assert_allclose(xp.to_numpy(out), xp.to_numpy(lg.ginger_precondition(state, g, damping=0.5)))


@pytest.mark.parametrize(("dim", "rank"), [(5, 0), (5, -1), (5, 5), (5, 6), (1, 1)])
def test_rank_out_of_range(xp, dim, rank):
    with pytest.raises(ValueError, match="rank"):
        lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    with pytest.raises(ValueError, match="rank"):
        lg.qng_init(dim, rank, xp=xp.module, dtype=xp.dtype)


@pytest.mark.parametrize(("dim", "rank"), [(5.0, 2), (5, 2.0), (5, True), ("5", 2)])
def test_dim_rank_not_integers(dim, rank):
    with pytest.raises(TypeError, match="dim|rank"):
        lg.ginger_init(dim, rank)
    with pytest.raises(TypeError, match="dim|rank"):
        lg.qng_init(dim, rank)


def test_init_dtype_must_be_float32_or_float64(xp):
    for bad in (xp.ns.int64, xp.ns.complex128, getattr(xp.ns, "float16", xp.ns.int32)):
        with pytest.raises(TypeError, match="dtype"):
            lg.ginger_init(6, 2, xp=xp.module, dtype=bad)
        with pytest.raises(TypeError, match="dtype"):
            lg.qng_init(6, 2, xp=xp.module, dtype=bad)


def test_init_rejects_non_namespace():
    with pytest.raises(TypeError, match="xp"):
        lg.ginger_init(6, 2, xp="numpy")
    import math

    with pytest.raises(TypeError, match="xp"):
        lg.ginger_init(6, 2, xp=math)


@pytest.mark.parametrize("shape", [(7,), (5,), (6, 1), (), (2, 6)])
def test_wrong_shapes(xp, state, qstate, shape):
    bad = xp.asarray(np.ones(shape))
    with pytest.raises(ValueError, match="d must have shape"):
        lg.ginger_update(state, bad, decay=0.9)
    with pytest.raises(ValueError, match="d must have shape"):
        lg.qng_update(qstate, bad, decay=0.9)
    if shape != (6, 1):  # a (dim, k) batch is a valid right-hand side
        with pytest.raises(ValueError, match="g must have shape"):
            lg.ginger_precondition(state, bad, damping=1.0)
        with pytest.raises(ValueError, match="g must have shape"):
            lg.qng_precondition(qstate, bad)


def test_integer_complex_and_mixed_dtypes(xp, state, qstate):
    # A lower precision than the state's is promoted exactly (float32 into float64); a higher one is refused.
    cases = [np.arange(6), np.ones(6, dtype=np.complex128)]
    if xp.dtype_name == "float32":
        cases.append(np.ones(6, dtype="float64"))
    product = lg.ginger_product_from_state(state)
    for value in cases:
        arr = xp.asarray(value, dtype=value.dtype)
        with pytest.raises(TypeError, match="d "):
            lg.ginger_update(state, arr, decay=0.9)
        with pytest.raises(TypeError, match="d "):
            lg.qng_update(qstate, arr, decay=0.9)
        with pytest.raises(TypeError, match="g "):
            lg.ginger_precondition(state, arr, damping=1.0)
        with pytest.raises(TypeError, match="d "):
            lg.ginger_product_update(product, arr, decay=0.9)
        with pytest.raises(TypeError, match="g "):
            lg.ginger_product_precondition(product, arr, damping=1.0)


def test_product_form_decay_and_damping_in_the_state_dtype(xp, state):
    """The product form refuses what the direct form refuses: values that round to 0, 1 or inf in the dtype."""
    product = lg.ginger_product_from_state(state)
    d = xp.asarray(np.ones(6))
    tiny = 1e-40 if xp.dtype_name == "float32" else 1e-310
    for fn in (lg.ginger_update, lg.ginger_product_update):
        target = state if fn is lg.ginger_update else product
        with pytest.raises(ValueError, match="decay"):
            fn(target, d, decay=1 - 1e-9 if xp.dtype_name == "float32" else 1.0)
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_product_precondition(product, d, damping=tiny)
    with pytest.raises(ValueError, match="damping"):
        lg.ginger_product_update_precondition(product, d, d, decay=0.9, damping=tiny)


def test_arrays_from_another_namespace(xp, state):
    other = np.ones(6, dtype=xp.np_dtype) if xp.name != "numpy" else pytest.importorskip("torch").ones(6)
    with pytest.raises(TypeError, match="namespace"):
        lg.ginger_update(state, other, decay=0.9)
    with pytest.raises(TypeError, match="namespace"):
        lg.ginger_precondition(state, other, damping=1.0)


def test_non_array_inputs(state):
    with pytest.raises(TypeError, match="d must be an array"):
        lg.ginger_update(state, [1.0] * 6, decay=0.9)
    with pytest.raises(TypeError, match="state"):
        lg.ginger_update((1, 2), np.ones(6), decay=0.9)
    with pytest.raises(TypeError, match="state"):
        lg.qng_update(state, np.ones(6), decay=0.9)


def test_arrays_on_another_device():
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    state = lg.ginger_init(6, 2, xp=strict, device=dev)
    with pytest.raises(ValueError, match="device"):
        lg.ginger_update(state, strict.ones(6), decay=0.9)
    with pytest.raises(ValueError, match="device"):
        lg.ginger_precondition(state, strict.ones(6), damping=1.0)
    qstate = lg.qng_init(6, 2, xp=strict, device=dev)
    with pytest.raises(ValueError, match="device"):
        lg.qng_update(qstate, strict.ones(6), decay=0.9)


def test_method_and_damping_combinations(xp, state):
    d = xp.asarray(np.ones(6))
    with pytest.raises(ValueError, match="method"):
        lg.ginger_update(state, d, decay=0.9, method="woodbury")
    with pytest.raises(ValueError, match="needs damping"):
        lg.ginger_update(state, d, decay=0.9, method="sherman-morrison")
    with pytest.raises(ValueError, match="not used by method='eigen'"):
        lg.ginger_update(state, d, decay=0.9, damping=1.0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="reorthonormalize_every"):
            lg.ginger_update(state, d, decay=0.9, reorthonormalize_every=bad)


def test_lowrank_eigh_update_negative_weight(xp, state):
    with pytest.raises(ValueError, match="weight"):
        lg.lowrank_eigh_update(state.basis, state.eigvals, xp.asarray(np.ones(6)), weight=-1.0)
    with pytest.raises(ValueError, match="scale"):
        lg.lowrank_eigh_update(state.basis, state.eigvals, xp.asarray(np.ones(6)), weight=1.0, scale=-0.5)


def test_reference_inputs():
    with pytest.raises(ValueError, match="square"):
        lg.damped_inverse_dense(np.ones((3, 4)), damping=1.0)
    with pytest.raises(ValueError, match="k must"):
        lg.best_rank_k(np.eye(3), 4)
    with pytest.raises(ValueError, match="decay"):
        lg.ema_dense(np.ones((2, 3)), decay=1.0)
    with pytest.raises(TypeError, match="real floating"):
        lg.damped_inverse_dense(np.eye(3, dtype=int), damping=1.0)


def test_failed_call_leaves_state_usable(xp, state):
    """A rejected call raises before computing anything; the state is untouched and still works."""
    before = [xp.to_numpy(a).copy() for a in state]
    with pytest.raises(ValueError, match="decay"):
        lg.ginger_update(state, xp.asarray(np.ones(6)), decay=2.0)
    for a, b in zip(before, state, strict=True):
        np.testing.assert_array_equal(a, xp.to_numpy(b))
    lg.ginger_update(state, xp.asarray(np.ones(6)), decay=0.5)
