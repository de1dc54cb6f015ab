"""The exact oracle at scale (``WindowEMA``) against dense float64, and the large Fisher streams."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from lowrank_ggn.studies import (
    LARGE_STREAMS,
    DeepMLP,
    ExactSpectrum,
    SmallCNN,
    SoftmaxRegression,
    Structured,
    WindowEMA,
    captured_share,
    cosine,
    decrease_fraction,
    digits_data,
    fisher_stream,
    large_stream_blocks,
    make_large_stream,
    parameter_blocks,
    principal_angles,
    spectral_error,
    window_metrics,
)
from tests._streams import ema, orthonormal, stream

RTOL = 1e-8


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _norm2(a):
    return float(np.abs(np.linalg.eigvalsh((a + a.T) / 2)).max())


def dense_reference(m, u, core, approx_damping, damping, g, rank):
    """Every metric of γ̃I + U C Uᵀ against γI + M, computed densely from their definitions."""
    dim = m.shape[0]
    lam, v = np.linalg.eigh(m)
    lam, v = np.maximum(lam[::-1], 0.0), v[:, ::-1]
    exact = (v * (damping + lam)) @ v.T
    exact_inv = (v / (damping + lam)) @ v.T
    core = np.diag(core) if core.ndim == 1 else core
    approx = approx_damping * np.eye(dim) + u @ core @ u.T
    approx_inv = np.linalg.inv(approx)
    step, best = approx_inv @ g, exact_inv @ g
    cos = (step * best).sum(0) / (np.linalg.norm(step, axis=0) * np.linalg.norm(best, axis=0))
    achieved = (g * step).sum(0) - 0.5 * (step * (exact @ step)).sum(0)
    out = {
        "inv_spectral_error": _norm2(approx_inv - exact_inv) * (damping + lam[-1]),
        "curv_spectral_error": _norm2(approx - exact) / (damping + lam[0]),
        "cosine": float(np.mean(cos)),
        "decrease_fraction": float(np.mean(achieved / (0.5 * (g * best).sum(0)))),
    }
    if rank is not None:
        out["lambda_next"] = lam[rank]
        out["eckart_young_bound"] = lam[rank] / (damping + lam[rank]) * (damping + lam[-1]) / damping
        if u.shape[1]:
            if u.shape[1] <= rank:
                sub = np.linalg.qr(u)[0]
            else:  # the eigenvectors of the τ largest coefficients of the (PSD) low-rank part
                e = np.linalg.eigh(u @ core @ u.T)[1]
                sub = e[:, ::-1][:, :rank]
            s = np.linalg.svd(v[:, :rank].T @ sub, compute_uv=False)
            cosines = np.concatenate([np.clip(s, 0, 1), np.zeros(max(rank - s.shape[0], 0))])
            out["angle_max_deg"] = float(np.degrees(np.arccos(cosines.min())))
            out["subspace_overlap"] = float(np.mean(cosines**2))
            out["captured_share"] = float(np.trace(sub.T @ m @ sub) / np.trace(m))
    return out


def assert_metrics_close(got, want, scale=1.0):
    for key, value in want.items():
        if key == "angle_max_deg":  # arccos near 1 loses half the digits
            assert got[key] == pytest.approx(value, abs=1e-5), key
        elif key == "lambda_next":
            assert got[key] == pytest.approx(value, rel=RTOL, abs=1e-13 * scale), key
        else:
            assert np.isfinite(got[key]), key
            assert got[key] == pytest.approx(value, rel=RTOL, abs=1e-13), key


def _window(rng, dim, size, decay, **kw):
    vectors = stream(rng, size, dim, "power", exponent=1.0)
    window = WindowEMA(dim, decay, **kw)
    for d in vectors:
        window.update(d)
    return window, vectors


# ------------------------------------------------------------ the window


@pytest.mark.parametrize(("decay", "max_size", "steps"), [(0.9, None, 40), (0.99, 7, 40), (0.5, None, 100)])
def test_window_is_the_exact_ema(decay, max_size, steps):
    rng = np.random.default_rng(0)
    dim = 30
    vectors = stream(rng, steps, dim, "power")
    window = WindowEMA(dim, decay, threshold=1e-6 if decay == 0.5 else 1e-12, max_size=max_size)
    for t, d in enumerate(vectors, start=1):
        window.update(d)
        kept = min(t, max_size or t)
        if decay == 0.5:  # α^age < 1e-6 from age 20: 20 vectors at most
            kept = min(t, 20)
        assert window.size == kept
    exact = ema(vectors, decay)
    newest = vectors[-window.size :]
    weights = (1 - decay) * decay ** np.arange(window.size - 1, -1, -1.0)
    np.testing.assert_allclose(window.dense(), (newest.T * weights) @ newest, rtol=1e-12, atol=1e-15)
    gap = exact - window.dense()
    # The dropped mass is the trace of what the window misses, a PSD matrix, so it bounds its norm.
    assert window.dropped == pytest.approx(np.trace(gap), rel=1e-9, abs=1e-15)
    assert _norm2(gap) <= window.dropped * (1 + 1e-9) + 1e-15
    assert np.linalg.eigvalsh(gap).min() >= -1e-13
    assert window.trace == pytest.approx(np.trace(window.dense()), rel=1e-12)
    x = rng.standard_normal((dim, 3))
    np.testing.assert_allclose(window.matvec(x), window.dense() @ x, rtol=1e-12, atol=1e-14)


def test_dropped_bound_when_drops_matter():
    """α small and a long stream: most of the vectors leave; the reported δ bounds ‖M_exact − M_window‖₂."""
    rng = np.random.default_rng(1)
    dim, steps, decay = 40, 400, 0.3
    vectors = stream(rng, steps, dim, "step", step_at=3) * np.linspace(1, 20, steps)[:, None]  # growing norms
    exact = np.zeros((dim, dim))
    for threshold, max_size in ((1e-2, None), (1e-12, 4)):
        window = WindowEMA(dim, decay, threshold=threshold, max_size=max_size)
        exact = np.zeros((dim, dim))
        for d in vectors:
            window.update(d)
            exact = decay * exact + (1 - decay) * np.outer(d, d)
        miss = _norm2(exact - window.dense())
        assert window.size < 10
        assert 1e-4 * window.trace < miss <= window.dropped * (1 + 1e-9)  # the drops matter, and are bounded
        assert window.dropped <= 2 * miss * dim  # and δ is no vacuous bound (it is a trace of a PSD matrix)


def test_reduction_leaves_out_only_what_it_reports():
    """Directions below the cutoff (here: repeated vectors and a 3e-7 component) leave with their mass, bounded."""
    rng = np.random.default_rng(4)
    dim = 50
    base = stream(rng, 6, dim, "power")
    tiny = np.zeros(dim)
    tiny[0] = 3e-7 * np.linalg.norm(base[0])  # an eigenvalue of about 1e-13 λ₁, below the cutoff 1e-12
    window = WindowEMA(dim, 0.8)
    for d in [*base, *base, base[0] + tiny]:
        window.update(d)
    reduction = window.reduce()
    assert reduction.rank_bound == 6  # the repeats add nothing, the 1e-9 component is left out
    p = reduction.basis
    np.testing.assert_allclose(p.T @ p, np.eye(6), atol=1e-14)
    kept = p @ reduction._m_k @ p.T
    gap = window.dense() - kept
    assert np.linalg.eigvalsh(gap).min() > -1e-15 * np.trace(kept)
    assert 1e-15 * np.trace(kept) < _norm2(gap) <= reduction.dropped * (1 + 1e-2) + 1e-15 * np.trace(kept)
    assert reduction.dropped < 1e-12 * np.trace(kept)


def test_window_eigh_is_the_dense_top():
    rng = np.random.default_rng(2)
    window, _ = _window(rng, 120, 30, 0.95)
    lam, v = np.linalg.eigh(window.dense())
    lam, v = lam[::-1], v[:, ::-1]
    top, vec = window.eigh(8)
    np.testing.assert_allclose(top, lam[:8], rtol=1e-10)
    np.testing.assert_allclose(vec.T @ vec, np.eye(8), atol=1e-13)
    np.testing.assert_allclose(vec @ vec.T, v[:, :8] @ v[:, :8].T, atol=1e-9)
    assert window.eigh(100)[0].shape == (30,)  # never more pairs than the window spans


# ------------------------------------------------------------ the metrics


def _methods(rng, m, rank, damping, decay):
    """(name, basis, core, approx_damping) of the forms the study meets."""
    lam, v = np.linalg.eigh(m)
    lam, v = lam[::-1], v[:, ::-1]
    dim = m.shape[0]
    tilted = np.linalg.qr(v[:, :rank] + 0.3 * rng.standard_normal((dim, rank)) / math.sqrt(dim))[0]
    sigma = lam[:rank] * (1 + 0.2 * rng.random(rank))
    within = v[:, :rank] @ np.linalg.qr(rng.standard_normal((rank, rank)))[0]  # a basis inside span X
    factor = rng.standard_normal((dim, rank)) / math.sqrt(dim)  # QNG-like: not orthonormal, a full core, α^k
    floor = decay**rank
    core = np.cov(rng.standard_normal((rank, 3 * rank))) * lam[0] - 0.5 * floor * np.eye(rank)
    wide = orthonormal(rng, dim, min(2 * rank + 1, dim))
    return [
        ("ginger", tilted, sigma, damping),
        ("ginger-tail", tilted, sigma, damping + 0.05 * lam[0]),
        ("ginger-undamped-side", tilted, sigma, 0.3 * damping),
        ("in-span", within, lam[:rank], damping),
        ("dependent", np.concatenate([tilted, tilted[:, :1]], axis=1), np.append(sigma, sigma[0]), damping),
        ("qng", factor, core, floor),
        ("identity", np.zeros((dim, 0)), np.zeros(0), damping + np.trace(m) / dim),
        ("wide", wide, np.linspace(2, 0.1, wide.shape[1]) * lam[0], damping),
    ]


@pytest.mark.parametrize(
    ("dim", "size", "decay"),
    [(60, 40, 0.9), (60, 50, 0.99), (30, 60, 0.95), (150, 12, 0.95), (300, 40, 0.99), (300, 20, 0.5)],
    ids=["d60-W40", "d60-W50-complete", "d30-W60-spans", "d150-W12", "d300-W40", "d300-W20"],
)
def test_metrics_match_dense(dim, size, decay):
    rng = np.random.default_rng(dim + size)
    window, vectors = _window(rng, dim, size, decay, threshold=0.0)
    m = ema(vectors, decay)
    np.testing.assert_allclose(window.dense(), m, rtol=1e-12, atol=1e-14)
    g = rng.standard_normal((dim, 4)) + m @ rng.standard_normal((dim, 4))
    reduction = window.reduce(g)
    scale = np.linalg.eigvalsh(m)[-1]
    for rank in (1, 4, 16):
        if rank >= size:
            continue
        for damping in (1e-3 * scale, 1e-1 * scale):
            for name, u, core, approx_damping in _methods(rng, m, rank, damping, decay):
                want = dense_reference(m, u, core, approx_damping, damping, g, rank)
                got = reduction.metrics(u, core, approx_damping, damping, rank=rank)
                assert 0.0 <= got["dropped"] < 1e-11 * scale  # only directions below 1e-12 λ₁ are left out
                try:
                    assert_metrics_close(got, want, scale)
                except AssertionError as err:
                    raise AssertionError(f"{name}, τ={rank}, γ={damping}: {err}") from err
            for tail in (False, True):
                lam, v = np.linalg.eigh(m)
                lam, v = lam[::-1], v[:, ::-1]
                extra = lam[rank:].sum() / (dim - rank) if tail else 0.0
                want = dense_reference(m, v[:, :rank], lam[:rank], damping + extra, damping, g, rank)
                got = reduction.oracle_metrics(damping, rank, tail=tail)
                assert got["effective_damping"] == pytest.approx(damping + extra, rel=1e-12)
                assert_metrics_close(got, want, scale)
                if not tail:  # Eckart–Young: the oracle's inverse error is the bound itself
                    assert got["inv_spectral_error"] == pytest.approx(got["eckart_young_bound"], rel=1e-8)
                    assert got["angle_max_deg"] == pytest.approx(0.0, abs=1e-5)


def test_extended_basis_is_orthonormal():
    """P' = [P, Q₂] stays orthonormal even for a rank-deficient U (Householder fills Q₂ with arbitrary columns)."""
    rng = np.random.default_rng(3)
    dim = 200
    window, _ = _window(rng, dim, 30, 0.9)
    reduction = window.reduce(rng.standard_normal(dim))
    tilted = orthonormal(rng, dim, 5)
    inside = window.eigh(3)[1]
    for u in (np.concatenate([tilted, tilted[:, :1]], axis=1), inside @ rng.standard_normal((3, 4))):
        space = reduction._extend(u)
        size = space["m"].shape[0]
        lifted = space["lift"](np.eye(size))
        np.testing.assert_allclose(lifted.T @ lifted, np.eye(size), atol=1e-13)
        np.testing.assert_allclose(space["lift"](space["u"]), u, atol=1e-13)
        assert np.abs(lifted.T @ space["perp"]).max() < 1e-13


def test_metrics_match_the_dense_study_functions():
    """Where the dense study's functions apply (isotropic + low rank), they give the same numbers."""
    rng = np.random.default_rng(5)
    dim, size, decay, rank, damping = 300, 40, 0.99, 8, 1e-2
    window, vectors = _window(rng, dim, size, decay, threshold=0.0)
    m = ema(vectors, decay)
    lam, v = np.linalg.eigh(m)
    exact = ExactSpectrum(np.maximum(lam[::-1], 0), v[:, ::-1], m)
    g = rng.standard_normal((dim, 6))
    basis = np.linalg.qr(exact.top(rank) + 0.2 * orthonormal(rng, dim, rank))[0]
    sigma = exact.eigvals[:rank] * 1.1
    for approx_damping in (damping, 2 * damping):
        s = Structured.from_lowrank(approx_damping, basis, np.diag(sigma))
        step = s.inverse().matvec(g)
        got = window_metrics(window, basis, sigma, approx_damping, damping, g=g, rank=rank)
        assert got["inv_spectral_error"] == pytest.approx(spectral_error(s, exact, damping), rel=RTOL)
        assert got["curv_spectral_error"] == pytest.approx(spectral_error(s, exact, damping, inverse=False), rel=RTOL)
        assert got["cosine"] == pytest.approx(np.mean(cosine(step, exact.solve(g, damping))), rel=RTOL)
        assert got["decrease_fraction"] == pytest.approx(np.mean(decrease_fraction(g, step, exact, damping)), rel=RTOL)
        assert got["captured_share"] == pytest.approx(captured_share(exact, s.basis), rel=RTOL)
        angles = principal_angles(exact.top(rank), s.basis)
        assert got["angle_max_deg"] == pytest.approx(np.degrees(angles.max()), abs=1e-5)
        assert got["subspace_overlap"] == pytest.approx(np.mean(np.cos(angles) ** 2), rel=RTOL)
        # A method's own (float32) step is used as given.
        own = step.astype(np.float32).astype(np.float64)
        got = window_metrics(window, basis, sigma, approx_damping, damping, g=g, rank=rank, step=own)
        assert got["cosine"] == pytest.approx(np.mean(cosine(own, exact.solve(g, damping))), rel=RTOL)
        assert got["decrease_fraction"] == pytest.approx(np.mean(decrease_fraction(g, own, exact, damping)), rel=RTOL)


@pytest.mark.parametrize("dim", [100, 300], ids=["dense", "lanczos"])
def test_diagonal_metrics(dim):
    """A diagonal is no scalar on a known complement: dense below 256, Lanczos above (to its tolerance)."""
    rng = np.random.default_rng(dim)
    decay, damping = 0.95, 1e-2
    window, vectors = _window(rng, dim, 30, decay)
    m = ema(vectors, decay)
    g = rng.standard_normal((dim, 3))
    diagonal = damping + np.diag(m)
    reduction = window.reduce(g)
    got = reduction.diagonal_metrics(diagonal, damping, max_restarts=None)
    s = Structured(diagonal, np.zeros((dim, 0)), np.zeros(0))
    lam, v = np.linalg.eigh(m)
    exact = ExactSpectrum(np.maximum(lam[::-1], 0), v[:, ::-1], m)
    rtol = RTOL if dim <= 256 else 1e-6
    assert got["inv_spectral_error"] == pytest.approx(spectral_error(s, exact, damping), rel=rtol)
    assert got["curv_spectral_error"] == pytest.approx(spectral_error(s, exact, damping, inverse=False), rel=rtol)
    step = g / diagonal[:, None]
    assert got["cosine"] == pytest.approx(np.mean(cosine(step, exact.solve(g, damping))), rel=RTOL)
    assert got["decrease_fraction"] == pytest.approx(np.mean(decrease_fraction(g, step, exact, damping)), rel=RTOL)


@pytest.mark.parametrize("dim", [100, 300], ids=["dense", "lanczos"])
def test_diagonal_plus_lowrank_metrics(dim):
    """diag(a) + V diag(c) Vᵀ (ginger-diagonal's form, V not orthonormal, one c = 0) against dense float64."""
    rng = np.random.default_rng(dim + 1)
    decay, damping = 0.95, 1e-2
    window, vectors = _window(rng, dim, 30, decay)
    m = ema(vectors, decay)
    g = rng.standard_normal((dim, 3))
    a = damping + rng.uniform(0.5, 1.5, dim) * np.diag(m)
    v = rng.standard_normal((dim, 4))
    c = np.array([3.0, 1.0, 0.0, 0.5])
    dense = np.diag(a) + (v * c) @ v.T
    got = window.reduce(g).diagonal_metrics(a, damping, max_restarts=None, lowrank=(v, c))
    lam, vec = np.linalg.eigh(m)
    exact = ExactSpectrum(np.maximum(lam[::-1], 0), vec[:, ::-1], m)
    ref = m + damping * np.eye(dim)
    rtol = RTOL if dim <= 256 else 1e-6
    inv_err = np.linalg.norm(np.linalg.inv(dense) - np.linalg.inv(ref), 2) * np.linalg.eigvalsh(ref)[0]
    curv_err = np.linalg.norm(dense - ref, 2) / np.linalg.eigvalsh(ref)[-1]
    assert got["inv_spectral_error"] == pytest.approx(inv_err, rel=rtol)
    assert got["curv_spectral_error"] == pytest.approx(curv_err, rel=rtol)
    step = np.linalg.solve(dense, g)
    assert got["cosine"] == pytest.approx(np.mean(cosine(step, exact.solve(g, damping))), rel=RTOL)
    assert got["decrease_fraction"] == pytest.approx(np.mean(decrease_fraction(g, step, exact, damping)), rel=RTOL)
    with pytest.raises(ValueError, match="lowrank"):
        window.reduce(g).diagonal_metrics(a, damping, lowrank=(v, -c))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="dim"):
        WindowEMA(0, 0.9)
    with pytest.raises(ValueError, match="decay"):
        WindowEMA(5, 1.0)
    with pytest.raises(ValueError, match="threshold"):
        WindowEMA(5, 0.9, threshold=1.0)
    with pytest.raises(ValueError, match="max_size"):
        WindowEMA(5, 0.9, max_size=0)
    window = WindowEMA(5, 0.9)
    with pytest.raises(ValueError, match="d must have shape"):
        window.update(np.ones(4))
    with pytest.raises(ValueError, match="d must be finite"):
        window.update(np.array([1.0, np.nan, 0, 0, 0]))
    assert window.size == 0
    assert window.steps == 0
    window.update(np.arange(5.0))
    window.update(np.ones(5))
    with pytest.raises(ValueError, match="gradients"):
        window.reduce(np.ones(4))
    red = window.reduce(np.ones(5))
    with pytest.raises(ValueError, match="basis"):
        red.metrics(np.ones((4, 1)), np.ones(1), 1.0, 1.0)
    with pytest.raises(ValueError, match="core"):
        red.metrics(np.ones((5, 1)), np.ones(2), 1.0, 1.0)
    with pytest.raises(ValueError, match="approx_damping"):
        red.metrics(np.ones((5, 1)), np.ones(1), 0.0, 1.0)
    with pytest.raises(ValueError, match="damping"):
        red.metrics(np.ones((5, 1)), np.ones(1), 1.0, -1.0)
    with pytest.raises(ValueError, match="rank"):
        red.metrics(np.ones((5, 1)), np.ones(1), 1.0, 1.0, rank=5)
    with pytest.raises(ValueError, match="diagonal"):
        red.diagonal_metrics(-np.ones(5), 1.0)


# ------------------------------------------------------------ the large streams


@pytest.mark.parametrize(
    "model", [DeepMLP(hidden=(7, 5)), SmallCNN(channels=(2, 3), hidden=4)], ids=["deep-mlp", "cnn"]
)
def test_backward_is_the_jacobian_transpose(model):
    """``backward(θ, x, δ) = Σ_i J_iᵀ δ_i``: ⟨backward, v⟩ against a central difference of Σ δ·log p."""
    rng = np.random.default_rng(1)
    x, _ = digits_data()
    xb = x[:5]
    theta = model.init(rng) + 0.1 * rng.standard_normal(model.dim)
    delta = rng.standard_normal((5, model.num_classes))
    delta -= delta.mean(axis=1, keepdims=True)  # zero row sums: log-softmax's per-row constant drops out
    h = 1e-6
    for _ in range(3):
        v = rng.standard_normal(model.dim)
        plus = np.sum(delta * np.log(model.probabilities(theta + h * v, xb)))
        minus = np.sum(delta * np.log(model.probabilities(theta - h * v, xb)))
        assert model.backward(theta, xb, delta) @ v == pytest.approx((plus - minus) / (2 * h), rel=1e-6, abs=1e-9)
    # Every parameter array is reached (a block the backward pass skipped would have a zero gradient).
    grad = model.backward(theta, xb, delta)
    assert all(np.abs(grad[b]).max() > 0 for b in model.blocks)


def test_large_streams():
    assert LARGE_STREAMS["digits-mlp-wide"].model.dim == 167_178
    assert LARGE_STREAMS["digits-cnn"].model.dim == 136_586
    assert LARGE_STREAMS["digits-mlp-1m"].model.dim == 1_126_410
    for name, spec in LARGE_STREAMS.items():
        dim = spec.model.dim
        blocks = large_stream_blocks(name)
        assert blocks[0].start == 0
        assert blocks[-1].stop == dim
        assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
        if spec.per_tensor:
            assert blocks == parameter_blocks(spec.model.shapes)
            assert [b.stop - b.start for b in blocks] == [math.prod(s) for s in spec.model.shapes]
        else:
            assert blocks == (slice(0, dim),)
    for name in ("digits-mlp-wide", "digits-cnn"):
        dim = LARGE_STREAMS[name].model.dim
        first = list(make_large_stream(name, steps=3, seed=4))
        again = list(make_large_stream(name, steps=3, seed=4))
        other = next(iter(make_large_stream(name, steps=1, seed=5)))
        for a, b in zip(first, again, strict=True):
            assert a.curvature.shape == a.gradient.shape == (dim,)
            assert np.all(np.isfinite(a.curvature))
            assert np.all(np.isfinite(a.gradient))
            np.testing.assert_array_equal(a.curvature, b.curvature)
            np.testing.assert_array_equal(a.gradient, b.gradient)
        assert not np.array_equal(first[0].curvature, other.curvature)
    with pytest.raises(ValueError, match="stream must be one of"):
        make_large_stream("digits-mlp", steps=1, seed=0)


def _fisher_quadratic(model, theta, x, v, labels=None):
    """vᵀ F v for softmax regression, F = mean_x Jᵀ(diag p − p pᵀ)J, J = [I ⊗ xᵀ, I] (analytic).

    With ``labels``, the empirical Fisher mean_x Jᵀ(e_y − p)(e_y − p)ᵀJ instead.
    """
    k = model.num_classes
    w, b = v[: k * model.num_inputs].reshape(k, -1), v[k * model.num_inputs :]
    z = x @ w.T + b  # J v for every example
    p = model.probabilities(theta, x)
    if labels is not None:
        return float(np.mean(((np.eye(k)[labels] - p) * z).sum(1) ** 2))
    return float(np.mean((p * z * z).sum(1) - (p * z).sum(1) ** 2))


def test_ema_of_the_stream_is_the_fisher():
    """Softmax regression at fixed θ (step size 0): the EMA of d dᵀ, kept by WindowEMA, tends to the Fisher."""
    model = SoftmaxRegression()
    steps, decay = 6000, 0.9995
    window = WindowEMA(model.dim, decay, threshold=0.0)
    for item in fisher_stream(model, steps=steps, seed=7, learning_rate=0.0):
        window.update(item.curvature)
    theta = model.init(np.random.default_rng(7))  # the stream's θ: the same seed, and it never moves
    x, y = digits_data()
    rng = np.random.default_rng(8)
    # Directions chosen without the estimate (its own top eigenvectors would be biased upwards): along the
    # leading principal components of the inputs, with random class weights, then at random.
    pcs = np.linalg.svd(x, full_matrices=False)[2][:4]
    k = model.num_classes
    classes = rng.standard_normal((4, k))
    along = [np.concatenate([np.outer(a, u).ravel(), np.zeros(k)]) for a, u in zip(classes, pcs, strict=True)]
    directions = np.stack(along + list(rng.standard_normal((4, model.dim))), axis=1)
    estimate = np.einsum("ij,ij->j", directions, window.matvec(directions)) / (1 - decay**steps)
    fisher = np.array([_fisher_quadratic(model, theta, x, v) for v in directions.T])
    empirical = np.array([_fisher_quadratic(model, theta, x, v, labels=y) for v in directions.T])
    np.testing.assert_allclose(estimate, fisher, rtol=0.1)
    # The check can fail: the empirical Fisher (true labels instead of sampled ones) is off by more.
    assert np.abs(empirical / estimate - 1).max() > 0.3
