"""Adversarial streams for every update method, on every backend and dtype.

Each case drives ``eigen``, ``sherman-morrison``, ``product`` (Ginger in
product form) and ``qng`` — and, for the inputs that apply to every method
(zero, non-finite, huge, tiny and subnormal vectors, one vector repeated,
entries beyond √max, saturated counters), the other approximations of the
protocol (``FAMILY``: Frequent Directions, the diagonal, Ginger with the
diagonal, Nyström) — through a hostile stream; every step is checked against
a dense float64 reference of one step from the previous state (see
``tests/_adversarial.py``): either the update agrees with it and the
invariants hold, or (only where the exact result overflows the dtype) the
update is rejected, counted and leaves the state unchanged, or the call
raises a ``ValueError`` that names the argument. ``record_property`` stores
the outcome for ``benchmarks/reliability_report.py``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

import lowrank_ggn as lg
from tests._adversarial import FAMILY, METHODS, Runner, warm

DIM, RANK = 10, 3


INT32_MAX = 2**31 - 1


@pytest.fixture(params=METHODS)
def method(request):
    return request.param


@pytest.fixture(params=METHODS + FAMILY)
def any_method(request):
    """Every method, for the inputs that apply to all of them."""
    return request.param


def _record(record_property, runner, extra=""):
    record_property("outcome", runner.tally.summary() + (f"; {extra}" if extra else ""))


def _span_vector(runner, state, rng):
    """A vector exactly in the span of the state's directions (U, or the window's factor vectors)."""
    host = runner.host(state)
    basis = host[0].T if runner.method == "qng" else runner.lowrank(host)[0]
    return basis @ rng.standard_normal(basis.shape[1])


def test_vector_in_span(xp, method, record_property):
    """d exactly in span(U) (QNG: in the span of the window's q_i): r = 0, only a rotation."""
    rng = np.random.default_rng(1)
    r = Runner(xp, method, DIM, RANK, decay=0.9)
    state = warm(r, rng, RANK + 3)
    for _ in range(8):
        state = r.step(state, _span_vector(r, state, rng))
    r.check_query(state, rng.standard_normal(DIM))
    _record(record_property, r)


def test_zero_vector(xp, any_method, record_property):
    """d = 0, from an empty and from a full state: the EMA only decays."""
    rng = np.random.default_rng(2)
    r = Runner(xp, any_method, DIM, RANK, decay=0.9)
    state = r.step(r.init(), np.zeros(DIM))
    state = warm(r, rng, RANK + 3)
    for _ in range(5):
        state = r.step(state, np.zeros(DIM))
    r.check_query(state, rng.standard_normal(DIM))
    _record(record_property, r)


def _repeated(xp, method, repeats, record_property):
    rng = np.random.default_rng(3)
    r = Runner(xp, method, DIM, RANK, decay=0.99)
    state = warm(r, rng, RANK + 3)
    d = rng.standard_normal(DIM)
    d_xp = xp.asarray(d)
    for t in range(repeats):
        checked = t < 10 or t % 500 == 0 or t == repeats - 1
        state = r.step(state, d) if checked else r.update(state, d_xp)
    host = r.host(state)
    r.check_invariants(host)
    assert int(host[-1]) == 0
    if method in ("eigen", "sherman-morrison", "product", "ginger-diagonal"):
        # The EMA converges to (1 − α^n)·ddᵀ + α^n·(the warm state).
        s = r.lowrank(host)[1]
        rtol = max(1e-3, 1e3 * xp.eps) if repeats > 1000 else 0.1
        if method == "sherman-morrison":  # that path loses digits in proportion to σ/γ
            rtol = max(rtol, 100 * xp.eps * (1 + float(d @ d) / r.damping))
        np.testing.assert_allclose(s[0], d @ d, rtol=rtol)
    r.check_query(state, rng.standard_normal(DIM))
    _record(record_property, r, f"{repeats} repeats")


def test_same_vector_repeated(xp, any_method, record_property):
    """The same d repeated (300 times here; 10⁴ in the slow variant)."""
    _repeated(xp, any_method, 300, record_property)


@pytest.mark.slow
def test_same_vector_repeated_10k(xp, method, record_property):
    """The same d repeated 10⁴ times."""
    _repeated(xp, method, 10_000, record_property)


SCALES = [1e-30, 1e-20, 1e-10, 1.0, 1e10, 1e20, 1e30]


@pytest.mark.parametrize("scale", SCALES, ids=[f"{s:g}" for s in SCALES])
def test_vector_norms(xp, any_method, scale, record_property):
    """‖d‖ and ‖g‖ from 1e-30 to 1e30: exact where representable, underflow to 0, or rejection on overflow."""
    method = any_method
    rng = np.random.default_rng(4)
    info = np.finfo(xp.np_dtype)
    # The Sherman–Morrison path needs γ² in range: clip γ = 1e-2·scale² into [10·√tiny, √max/10].
    low, high = 10 * math.sqrt(float(info.smallest_normal)), math.sqrt(float(info.max)) / 10
    damping = min(max(1e-2 * scale * scale, low), high)
    r = Runner(xp, method, DIM, RANK, decay=0.9, damping=damping)
    state = r.init()
    for _ in range(2 * RANK + 2):
        state = r.step(state, scale * rng.standard_normal(DIM))
    r.check_query(state, scale * rng.standard_normal(DIM))
    _record(record_property, r, f"γ = {damping:.1g}" if method == "sherman-morrison" else "")


def test_norms_at_the_underflow_edge(xp, any_method, record_property):
    """‖d‖ near √(smallest normal): the squares in ‖d‖² are subnormal (flushed to 0 on JAX's CPU backend)."""
    method = any_method
    rng = np.random.default_rng(11)
    edge = math.sqrt(float(np.finfo(xp.np_dtype).smallest_normal))
    r = Runner(xp, method, DIM, RANK, decay=0.5, damping=10 * edge * edge if method == "sherman-morrison" else 1e-2)
    if method == "sherman-morrison":
        r.damping = max(r.damping, 2 * edge)
    state = r.init()
    for scale in (edge, edge / 4, 4 * edge, edge):
        for _ in range(RANK + 1):
            state = r.step(state, scale * rng.standard_normal(DIM))
    r.check_query(state, edge * rng.standard_normal(DIM))
    _record(record_property, r, f"‖d‖ ≈ {edge:.1e}")


def test_subnormal_values(xp, any_method, record_property):
    """Subnormal entries in d, a state whose eigenvalues are subnormal, subnormal gradients."""
    rng = np.random.default_rng(5)
    sub = float(np.finfo(xp.np_dtype).smallest_normal) / 64
    r = Runner(xp, any_method, DIM, RANK, decay=0.9, damping=1.0)
    state = r.init()
    for _ in range(3):  # all-subnormal vectors
        state = r.step(state, sub * rng.standard_normal(DIM))
    state = warm(r, rng, RANK + 2)
    mixed = rng.standard_normal(DIM)
    mixed[::2] = sub
    state = r.step(state, mixed)
    tiny_scale = math.sqrt(float(np.finfo(xp.np_dtype).smallest_normal)) * 4  # σ ~ scale² is near-subnormal
    for _ in range(RANK + 2):
        state = r.step(state, tiny_scale * rng.standard_normal(DIM))
    r.check_query(state, sub * rng.standard_normal(DIM))
    r.check_query(state, rng.standard_normal(DIM))
    _record(record_property, r, "subnormals may be flushed to 0 (JAX on CPU)")


@pytest.mark.parametrize("k", [1, RANK - 1, RANK, RANK + 1])
def test_rank_deficient_stream(xp, method, k, record_property):
    """A stream confined to a k-dimensional subspace; for k ≤ τ Ginger equals the exact EMA."""
    rng = np.random.default_rng(6)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, k)))
    r = Runner(xp, method, DIM, RANK, decay=0.9)
    state = r.init()
    stream = (basis @ rng.standard_normal((k, 3 * RANK + 2))).T
    for d in stream:
        state = r.step(state, d)
    if method != "qng" and k <= RANK:
        host = r.host(state)
        exact = np.zeros((DIM, DIM))
        for d in r.xp.to_numpy(xp.asarray(stream)):
            exact = 0.9 * exact + 0.1 * np.outer(d, d)
        u, s = r.lowrank(host)
        scale = 1 + (np.abs(exact).max() / r.damping if method == "sherman-morrison" else 0)
        assert np.abs((u * s) @ u.T - exact).max() <= 1e3 * xp.eps * scale * np.abs(exact).max()
        assert np.all(s[k:] <= 1e3 * xp.eps * scale * s[0])
    r.check_query(state, rng.standard_normal(DIM))
    _record(record_property, r)


@pytest.mark.parametrize("dim", [2, 6])
def test_rank_is_dim_minus_one(xp, method, dim, record_property):
    """τ = dim − 1, the largest rank allowed."""
    rng = np.random.default_rng(7)
    r = Runner(xp, method, dim, dim - 1, decay=0.8)
    state = r.init()
    for _ in range(3 * dim + 2):
        state = r.step(state, rng.standard_normal(dim))
    r.check_query(state, rng.standard_normal(dim))
    _record(record_property, r)


def _decays(np_dtype):
    info = np.finfo(np_dtype)
    eps, tiny = float(info.eps), float(info.smallest_normal)
    return {
        "smallest-normal": tiny,
        "1e-12": 1e-12,
        "1e-6": 1e-6,
        "1-1e-6": 1 - 1e-6,
        "largest-below-1": 1 - eps / 2,
        "rounds-to-1": 1 - eps / 8,
        "subnormal": tiny / 16,
    }


@pytest.mark.parametrize("which", list(_decays(np.float64)))
def test_decay_extremes(xp, method, which, record_property):
    """Decay very close to 0 and to 1: exact, or a ValueError where it rounds to 0/1 or (QNG) decay**rank underflows."""
    decay = _decays(xp.np_dtype)[which]
    info = np.finfo(xp.np_dtype)
    rounds = 1 - decay <= float(info.eps) / 4 or decay < float(info.smallest_normal)
    qng_range = method == "qng" and RANK * math.log(decay) < 0.5 * math.log(float(info.smallest_normal))
    rng = np.random.default_rng(8)
    r = Runner(xp, method, DIM, RANK, decay=decay)
    if rounds or qng_range:
        # Eager call: under jax.jit a traced decay cannot be checked (documented).
        state, d = r.init(), xp.asarray(rng.standard_normal(DIM))
        if method == "qng":
            call = functools.partial(lg.qng_update, state, d, decay=decay)
        elif method == "product":
            call = functools.partial(lg.ginger_product_update, state, d, decay=decay)
        else:
            kw = {"damping": r.damping, "method": method} if method == "sherman-morrison" else {}
            call = functools.partial(lg.ginger_update, state, d, decay=decay, **kw)
        with pytest.raises(ValueError, match="decay"):
            call()
        record_property("outcome", "ValueError (decay " + ("rounds to 0/1" if rounds else "**rank below range") + ")")
        return
    state = r.init()
    for _ in range(3 * RANK):
        state = r.step(state, rng.standard_normal(DIM))
    r.check_query(state, rng.standard_normal(DIM))
    _record(record_property, r, f"decay = {decay!r}")


DAMPINGS = [1e-12, 1e-6, 1e-3, 1.0, 1e6]


@pytest.mark.parametrize("damping", DAMPINGS, ids=[f"{g:g}" for g in DAMPINGS])
def test_damping_range(xp, method, damping, record_property):
    """Damping from 1e-12 to 1e6: queries agree with the dense inverse (to eps·cond), SM updates or reject."""
    if method == "qng":
        pytest.skip("QNG has no damping (its damping is decay**k)")
    rng = np.random.default_rng(9)
    r = Runner(xp, method, DIM, RANK, decay=0.9, damping=damping)
    state = warm(r, rng, 2 * RANK + 2)
    errs = [r.check_query(state, rng.standard_normal(DIM), damping=damping)]
    errs.append(r.check_query(state, _span_vector(r, state, rng), damping=damping))
    _record(record_property, r, f"query err/tol {max(errs):.2g}")


def test_damping_outside_dtype_range(xp, record_property):
    """A damping that rounds to 0 or inf in the state's dtype (γ² for Eq 16/18) is a ValueError, not a NaN."""
    state = lg.ginger_update(
        lg.ginger_init(DIM, RANK, xp=xp.module, dtype=xp.dtype), xp.asarray(np.ones(DIM)), decay=0.5
    )
    product = lg.ginger_product_from_state(state)
    g = xp.asarray(np.ones(DIM))
    info = np.finfo(xp.np_dtype)
    bads = [float(info.smallest_normal) / 4] + ([float(info.max) * 4] if xp.dtype_name == "float32" else [])
    for bad in bads:
        with pytest.raises(ValueError, match="damping"):
            lg.ginger_precondition(state, g, damping=bad)
        with pytest.raises(ValueError, match="damping"):
            lg.damped_solve(state.basis, state.eigvals, g, damping=bad)
        with pytest.raises(ValueError, match="damping"):
            lg.ginger_product_precondition(product, g, damping=bad)
        with pytest.raises(ValueError, match="damping"):
            lg.ginger_product_update_precondition(product, g, g, decay=0.5, damping=bad)
    # Formulas with γ² (Eq 16, Eq 18, the Sherman–Morrison path) need γ² in range.
    for bad in (math.sqrt(float(info.smallest_normal)) / 4, math.sqrt(float(info.max)) * 4):
        with pytest.raises(ValueError, match="damping"):
            lg.ginger_update(state, g, decay=0.5, damping=bad, method="sherman-morrison")
        with pytest.raises(ValueError, match="damping"):
            lg.kappa_from_sigma(state.eigvals, bad)
        with pytest.raises(ValueError, match="damping"):
            lg.sherman_morrison_step(state.basis, state.eigvals, g, decay=0.5, damping=bad)
        lg.ginger_precondition(state, g, damping=bad)  # the query itself is fine there
    record_property("outcome", "ValueError")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_vector(xp, any_method, bad, record_property):
    """NaN or inf in d: rejected, counted in num_nonfinite, the state unchanged; the next update works."""
    rng = np.random.default_rng(10)
    r = Runner(xp, any_method, DIM, RANK, decay=0.9)
    state = warm(r, rng, RANK + 1)
    d = rng.standard_normal(DIM)
    d[3] = bad
    state = r.step(state, d)
    state = r.step(state, rng.standard_normal(DIM))
    assert r.tally.rejected == 1
    _record(record_property, r)


def test_counters_saturate(xp, any_method, record_property):
    """``step`` and ``num_nonfinite`` at 2³¹ − 1 saturate (never wrap), and the update is the one from a low count."""
    rng = np.random.default_rng(12)
    r = Runner(xp, any_method, DIM, RANK, decay=0.9)
    state = warm(r, rng, RANK + 1)
    d = xp.asarray(rng.standard_normal(DIM))
    low = r.host(r.update(state._replace(step=xp.asarray(np.int32(7), dtype=np.int32)), d))
    top = r.host(r.update(state._replace(step=xp.asarray(np.int32(INT32_MAX), dtype=np.int32)), d))
    # Ginger's step backs off by its re-orthonormalisation period at the top (to keep the period).
    assert INT32_MAX - 10_000 <= int(top[-2]) <= INT32_MAX
    assert int(top[-1]) == int(low[-1]) == 0
    r.check_invariants(top)
    for a, b in zip(low[:-2], top[:-2], strict=True):  # re-orthonormalisation may differ (step-driven)
        np.testing.assert_allclose(b, a, rtol=0, atol=100 * xp.eps * max(1.0, float(np.abs(a).max(initial=0))))
    bad = xp.asarray(np.full(DIM, np.nan))
    full = state._replace(num_nonfinite=xp.asarray(np.int32(INT32_MAX), dtype=np.int32))
    after = r.host(r.update(full, bad))
    assert int(after[-1]) == INT32_MAX
    for a, b in zip(r.host(full)[:-1], after[:-1], strict=True):
        np.testing.assert_array_equal(b, a)
    record_property("outcome", f"saturated at {INT32_MAX} (step {int(top[-2])} after an accepted update)")


PRODUCT_KINDS = ["normal", "in-span", "zero", "tiny", "huge", "nan", "inf"]


@pytest.mark.parametrize("kind", PRODUCT_KINDS)
def test_product_fused_step(xp, kind, record_property):
    """The product form's fused step (the protocol's update_precondition) = update, then precondition.

    Also for a rejected d (NaN, inf; huge where (1−α)‖d‖² overflows): the state is unchanged, counted,
    and the query is the old state's, finite.
    """
    rng = np.random.default_rng(13)
    approx = lg.ginger_product(rank=RANK, decay=0.9)
    r = Runner(xp, "product", DIM, RANK, decay=0.9)
    state = warm(r, rng, 2 * RANK + 1)  # the buffer has been compressed at least once
    info = np.finfo(xp.np_dtype)
    scale = {"tiny": math.sqrt(float(info.smallest_normal)), "huge": math.sqrt(float(info.max)), "zero": 0.0}
    d = rng.standard_normal(DIM) * scale.get(kind, 1.0)
    if kind == "in-span":
        u = r.lowrank(r.host(state))[0]
        d = u @ rng.standard_normal(RANK)
    if kind in ("nan", "inf"):
        d[2] = math.nan if kind == "nan" else math.inf
    g = xp.asarray(rng.standard_normal(DIM))
    with np.errstate(over="ignore", invalid="ignore"):
        d = xp.asarray(d)
    new, y = approx.update_precondition(state, d, g, damping=r.damping)
    alone = approx.update(state, d)
    host, ref = r.host(new), r.host(alone)
    assert [int(a) for a in host[-3:]] == [int(a) for a in ref[-3:]]  # count, step, num_nonfinite
    # The represented matrices (a basis is arbitrary within the rounding-level eigenvalues).
    (u_new, s_new), (u_ref, s_ref) = r.lowrank(host), r.lowrank(ref)
    pairs = [((u_ref * s_ref) @ u_ref.T, (u_new * s_new) @ u_new.T), (np.hstack(ref[3:6]), np.hstack(host[3:6]))]
    for want, got in pairs:
        want64 = np.asarray(want, dtype=np.float64)
        atol = 100 * DIM * xp.eps * float(np.abs(want64).max(initial=0))
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want64, rtol=0, atol=atol)
    if int(host[-1]):  # rejected: bit for bit the old state
        for a, b in zip(r.host(state), host, strict=True):
            if a.ndim == 0 and a.dtype.kind == "i":
                continue
            np.testing.assert_array_equal(b, a)
    err = r.check_query(new, xp.to_numpy(g))
    y_ref = xp.to_numpy(approx.precondition(new, g, damping=r.damping))
    y_np = xp.to_numpy(y)
    assert np.all(np.isfinite(y_np))
    np.testing.assert_allclose(y_np, y_ref, rtol=0, atol=100 * DIM * xp.eps * float(np.abs(y_ref).max()))
    record_property("outcome", ("rejected, counted" if int(host[-1]) else "accepted") + f"; query err/tol {err:.2g}")


@pytest.mark.parametrize("level", [2, 6])
def test_entries_beyond_sqrt_max(xp, any_method, level, record_property):
    """Entries d_i with d_i² = level·max (overflowing) but (1−α)d_i² in range, cycling over τ + 1 coordinates.

    The exact diagonal and sketch are in range at first: they must be accepted (d∘d and d(dᵀΩ) formed
    before the factor 1−α would overflow); for ``level = 6`` the exact diagonal grows past the range
    within the stream: then the update is rejected — for Ginger with the diagonal, both parts together.
    """
    decay = 0.99
    big = float(np.finfo(xp.np_dtype).max)
    c = math.sqrt(level) * math.sqrt(big)  # level·big itself overflows in float64
    r = Runner(xp, any_method, DIM, RANK, decay=decay)
    state = r.init()
    for t in range(120):
        d = np.zeros(DIM)
        d[t % (RANK + 1)] = c
        state = r.step(state, d)
    r.check_query(state, np.random.default_rng(14).standard_normal(DIM))
    _record(record_property, r, f"d_i² = {level}·max, decay {decay}")
