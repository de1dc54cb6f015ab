"""The approximation-error studies: streams, methods, metrics against dense float64, a tiny end-to-end run."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

import scipy.linalg

import lowrank_ggn as lg
from lowrank_ggn.studies import (
    COLUMNS,
    METHODS,
    MLP,
    DiagonalRun,
    ExactEMA,
    ExactSpectrum,
    GingerRun,
    IsotropicRun,
    QNGRun,
    SoftmaxRegression,
    Structured,
    StudyConfig,
    captured_share,
    cosine,
    decrease_fraction,
    diag_lowrank_norm,
    digits_data,
    fisher_stream,
    headline,
    principal_angles,
    relative_spectral_distance,
    run_study,
    spectral_error,
    summary_table,
    synthetic_spectrum,
    synthetic_stream,
    write_outputs,
)
from lowrank_ggn.studies._metrics import DENSE_MAX, _count_above, _eigen_brackets, _largest_eigenvalue
from tests._streams import orthonormal, spectrum, stream


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    """Small dense problems: one BLAS thread (multithreaded BLAS on tiny matrices only contends)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


# ---------------------------------------------------------------- streams


@pytest.mark.parametrize("model", [SoftmaxRegression(), MLP()], ids=["softmax", "mlp"])
def test_backward_is_the_jacobian_transpose(model):
    """``backward(θ, x, δ) = Σ_i J_iᵀ δ_i``: check ⟨backward, v⟩ against a central difference of Σ δ·logits."""
    rng = np.random.default_rng(1)
    x, _ = digits_data()
    xb = x[:5]
    theta = model.init(rng) + 0.1 * rng.standard_normal(model.dim)
    delta = rng.standard_normal((5, model.num_classes))
    v = rng.standard_normal(model.dim)

    def logits(t):
        p = model.probabilities(t, xb)
        return np.log(p)  # log-softmax = logits up to a per-row constant

    # Σ δ·log softmax(z) has gradient Jᵀ(δ − p Σδ); use δ with zero row sums so the constant drops out.
    delta -= delta.mean(axis=1, keepdims=True)
    h = 1e-6
    fd = (np.sum(delta * logits(theta + h * v)) - np.sum(delta * logits(theta - h * v))) / (2 * h)
    assert model.backward(theta, xb, delta) @ v == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("model", [SoftmaxRegression(), MLP()], ids=["softmax", "mlp"])
def test_fisher_stream_gradients_and_training(model):
    x, _ = digits_data()
    assert x.shape == (1797, 64)
    assert np.allclose(x.mean(axis=0), 0, atol=1e-12)
    steps = list(fisher_stream(model, steps=60, seed=3, batch_size=16))
    assert [s.step for s in steps] == list(range(1, 61))
    for s in steps:
        assert s.curvature.shape == s.gradient.shape == (model.dim,)
        assert np.all(np.isfinite(s.curvature))
        assert np.all(np.isfinite(s.gradient))
    # Adam is training: the mini-batch loss falls.
    assert np.mean([s.loss for s in steps[-10:]]) < 0.6 * np.mean([s.loss for s in steps[:5]])
    # Reproducible from the seed.
    again = next(iter(fisher_stream(model, steps=1, seed=3, batch_size=16)))
    np.testing.assert_array_equal(again.curvature, steps[0].curvature)


def test_fisher_vector_has_the_ggn_as_covariance():
    """For softmax regression, E_ŷ[d dᵀ] = (1/B) Σ_x J_xᵀ (diag p − p pᵀ) J_x: check with many label draws."""
    model = SoftmaxRegression()
    rng = np.random.default_rng(0)
    x, _ = digits_data()
    xb = x[:4]
    theta = 0.3 * rng.standard_normal(model.dim)
    p = model.probabilities(theta, xb)
    k = model.num_classes
    # Exact GGN via the pull-back of the output-space factors (diag p − p pᵀ = L Lᵀ).
    ggn = np.zeros((model.dim, model.dim))
    for i in range(xb.shape[0]):
        w, v = np.linalg.eigh(np.diag(p[i]) - np.outer(p[i], p[i]))
        for j in range(k):
            delta = np.zeros((xb.shape[0], k))
            delta[i] = np.sqrt(max(w[j], 0.0)) * v[:, j]
            col = model.backward(theta, xb, delta)
            ggn += np.outer(col, col)
    ggn /= xb.shape[0]
    draws = 4000
    u = rng.random((draws, xb.shape[0], 1))
    sampled = np.minimum((p.cumsum(axis=1)[None] < u).sum(axis=2), k - 1)
    rows = np.stack([model.backward(theta, xb, np.eye(k)[s] - p) for s in sampled]) / np.sqrt(xb.shape[0])
    emp = rows.T @ rows / draws
    assert np.linalg.norm(emp - ggn) / np.linalg.norm(ggn) < 0.1


def test_synthetic_streams():
    s = synthetic_spectrum(50, "step", step_at=4, floor=1e-3)
    assert s[:4].tolist() == [1.0] * 4
    assert np.all(s[4:] == 1e-3)
    np.testing.assert_allclose(synthetic_spectrum(5, "power", exponent=2.0), 1 / np.arange(1, 6) ** 2)
    with pytest.raises(ValueError, match="kind"):
        synthetic_spectrum(5, "flat")
    rows = np.array([s.curvature for s in synthetic_stream("power", dim=20, steps=4000, seed=0)])
    cov = rows.T @ rows / rows.shape[0]
    np.testing.assert_allclose(np.linalg.eigvalsh(cov)[::-1][:3], synthetic_spectrum(20, "power")[:3], rtol=0.15)


# ---------------------------------------------------------------- metrics against dense float64


def _random_psd(rng, dim, kind="power"):
    q = orthonormal(rng, dim, dim)
    lam = spectrum(dim, kind)
    return (q * lam) @ q.T


def _spectrum(m):
    lam, vec = np.linalg.eigh(m)
    return ExactSpectrum(np.maximum(lam[::-1], 0), vec[:, ::-1], m)


@pytest.mark.parametrize("dim", [40, DENSE_MAX + 20], ids=["dense", "lanczos"])
@pytest.mark.parametrize("damping", [1e-4, 1e-2, 1.0])
def test_oracle_inverse_error_is_the_eckart_young_bound(dim, damping):
    """Best rank τ at damping γ: ‖G̃⁻¹ − G⁻¹‖ = 1/γ − 1/(γ + λ_{τ+1}); ‖G̃ − G‖ = λ_{τ+1} (Eckart–Young).

    Relative to ‖G⁻¹‖ = 1/(γ + λ_min), which is 1/γ for a singular M: then λ_{τ+1}/(γ + λ_{τ+1}).
    """
    rng = np.random.default_rng(7)
    m = _random_psd(rng, dim)
    exact = _spectrum(m)
    rank = 6
    basis, eigvals = lg.best_rank_k(m, rank)
    oracle = Structured(np.full(dim, damping), basis, eigvals)
    lam = exact.eigvals
    bound = (1 / damping - 1 / (damping + lam[rank])) * (damping + lam[-1])
    assert spectral_error(oracle, exact, damping) == pytest.approx(bound, rel=1e-7)
    assert spectral_error(oracle, exact, damping, inverse=False) == pytest.approx(
        lam[rank] / (damping + lam[0]), rel=1e-7
    )
    # A singular M (rank < dim, as M_t for t < d): the relative error is λ_{τ+1}/(γ + λ_{τ+1}).
    b12, e12 = lg.best_rank_k(m, 12)
    low = (b12 * e12) @ b12.T
    exact_low = _spectrum(low)
    b2, e2 = lg.best_rank_k(low, rank)
    lam2 = exact_low.eigvals
    got = spectral_error(Structured(np.full(dim, damping), b2, e2), exact_low, damping)
    assert got == pytest.approx(lam2[rank] / (damping + lam2[rank]), rel=1e-7)


@pytest.mark.parametrize("dim", [30, DENSE_MAX + 20])
def test_spectral_error_matches_dense(dim):
    rng = np.random.default_rng(dim)
    m = _random_psd(rng, dim)
    exact = _spectrum(m)
    damping = 1e-3
    ref_inv = np.linalg.inv(damping * np.eye(dim) + m)
    ref = damping * np.eye(dim) + m
    for approx in (
        Structured.from_lowrank(damping, rng.standard_normal((dim, 5)), np.diag(rng.random(5))),
        Structured.from_lowrank(0.3, orthonormal(rng, dim, 3), np.diag([3.0, 1.0, 0.2])),
        Structured(damping + rng.random(dim), np.zeros((dim, 0)), np.zeros(0)),  # diagonal
    ):
        dense = approx.dense()
        want_inv = np.linalg.norm(np.linalg.inv(dense) - ref_inv, 2) / np.linalg.norm(ref_inv, 2)
        want = np.linalg.norm(dense - ref, 2) / np.linalg.norm(ref, 2)
        assert spectral_error(approx, exact, damping) == pytest.approx(want_inv, rel=1e-7)
        assert spectral_error(approx, exact, damping, inverse=False) == pytest.approx(want, rel=1e-7)


def _diag_lowrank_cases(rng):
    for trial in range(6):
        dim = int(rng.integers(DENSE_MAX + 10, DENSE_MAX + 80))
        k = int(rng.integers(1, 12))
        if trial % 3 == 0:  # a tight cluster at the top (Ginger's inverse error at small γ)
            delta = 1e4 - 1 / (1e-4 + rng.exponential(size=dim))
        elif trial % 3 == 1:
            delta = rng.standard_normal(dim)
        else:
            delta = np.where(rng.random(dim) < 0.5, 1.0, -1.0) * (1 + 1e-9 * rng.random(dim))
        yield delta, orthonormal(rng, dim, k), rng.standard_normal(k) * rng.choice([1.0, 1e3])


def test_diag_lowrank_norm_and_bisection_match_dense():
    rng = np.random.default_rng(11)
    for delta, b, c in _diag_lowrank_cases(rng):
        w = np.linalg.eigvalsh(np.diag(delta) + (b * c) @ b.T)
        scale = np.abs(w).max()
        assert diag_lowrank_norm(delta, b, c) == pytest.approx(scale, rel=1e-7)
        (lo1, hi1), (lo2, hi2) = _eigen_brackets(delta, c)
        assert lo1 <= w[-1] + 1e-12 * scale
        assert w[-1] <= hi1 + 1e-12 * scale
        assert lo2 <= w[0] + 1e-12 * scale
        assert w[0] <= hi2 + 1e-12 * scale
        # Bisection on inertia counts is exact.
        assert _largest_eigenvalue(delta, b, c, lo1, hi1) == pytest.approx(w[-1], abs=1e-12 * scale)
        assert -_largest_eigenvalue(-delta, b, -c, -hi2, -lo2) == pytest.approx(w[0], abs=1e-12 * scale)
        mid = 0.5 * (w[len(w) // 2] + w[len(w) // 2 + 1])
        assert _count_above(mid, delta, b, c) == int((w > mid).sum())


def test_small_metrics_match_dense():
    rng = np.random.default_rng(5)
    dim, rank, damping = 25, 4, 0.05
    m = _random_psd(rng, dim, "step")
    exact = _spectrum(m)
    g = rng.standard_normal((dim, 3))
    opt = np.linalg.solve(damping * np.eye(dim) + m, g)
    np.testing.assert_allclose(exact.solve(g, damping), opt, rtol=1e-10)
    np.testing.assert_allclose(cosine(opt, exact.solve(g, damping)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(decrease_fraction(g, opt, exact, damping), 1.0, rtol=1e-10)
    step = rng.standard_normal((dim, 3))
    gm = damping * np.eye(dim) + m
    want = [
        (gi @ si - 0.5 * si @ gm @ si) / (0.5 * gi @ np.linalg.solve(gm, gi))
        for gi, si in zip(g.T, step.T, strict=True)
    ]
    np.testing.assert_allclose(decrease_fraction(g, step, exact, damping), want, rtol=1e-10)
    # A step −2G⁻¹g overshoots: decrease 0; −G⁻¹g/2 reaches 3/4 of the optimum.
    np.testing.assert_allclose(decrease_fraction(g, 2 * opt, exact, damping), 0.0, atol=1e-10)
    np.testing.assert_allclose(decrease_fraction(g, 0.5 * opt, exact, damping), 0.75, rtol=1e-10)
    q = orthonormal(rng, dim, rank)
    np.testing.assert_allclose(captured_share(exact, q), np.trace(q.T @ m @ q) / np.trace(m), rtol=1e-12)
    np.testing.assert_allclose(
        np.sort(principal_angles(exact.top(rank), q)),
        np.sort(scipy.linalg.subspace_angles(exact.top(rank), q)),
        atol=1e-10,
    )
    np.testing.assert_allclose(principal_angles(exact.top(rank), exact.top(rank)), 0.0, atol=1e-7)
    a = Structured.from_lowrank(2.0, rng.standard_normal((dim, 3)), np.diag(rng.random(3)))
    b = Structured.from_lowrank(2.0, rng.standard_normal((dim, 2)), np.diag(rng.random(2)))
    want = np.linalg.norm(a.dense() - b.dense(), 2) / np.linalg.norm(b.dense(), 2)
    assert relative_spectral_distance(a, b) == pytest.approx(want, rel=1e-10)
    np.testing.assert_allclose(a.inverse().dense(), np.linalg.inv(a.dense()), rtol=1e-10, atol=1e-12)
    x = rng.standard_normal((dim, 2))
    np.testing.assert_allclose(a.matvec(x), a.dense() @ x, rtol=1e-12)


# ---------------------------------------------------------------- methods


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_method_runs_represent_their_states(dtype):
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(2)
    dim, rank, decay, damping = 30, 4, 0.9, 1e-2
    data = stream(rng, 25, dim)
    tol = 1e-10 if dtype == "float64" else 1e-4
    common = {"dim": dim, "decay": decay, "xp": xp, "dtype": getattr(xp, dtype)}
    ginger, sm, qng = (
        GingerRun(rank=rank, **common),
        GingerRun(rank=rank, path_damping=damping, **common),
        QNGRun(rank=rank, **common),
    )
    diag, iso, ema = DiagonalRun(**common), IsotropicRun(**common), ExactEMA(dim, decay)
    for d in data:
        ema.update(d)
        dd = xp.asarray(d, dtype=getattr(xp, dtype))
        for run in (ginger, sm, qng, diag, iso):
            run.step(dd, dd, damping)
    m = ema.matrix
    np.testing.assert_allclose(m, lg.ema_dense(data, decay=decay), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        ginger.structure(damping).dense(), lg.ginger_dense(ginger.state, damping=damping), rtol=tol, atol=tol
    )
    np.testing.assert_allclose(
        sm.structure(damping).dense(), ginger.structure(damping).dense(), rtol=100 * tol, atol=100 * tol
    )
    np.testing.assert_allclose(qng.structure().dense(), lg.qng_dense(qng.state), rtol=tol, atol=tol)
    assert qng.implicit_damping == pytest.approx(decay**rank, rel=tol)
    np.testing.assert_allclose(diag.structure(damping).diagonal, damping + np.diag(m), rtol=tol)
    assert iso.structure(damping).diagonal[0] == pytest.approx(damping + np.trace(m) / dim, rel=tol)
    # Tail-aware dampings from the tracked discarded mass ρ = tr M − Σσ.
    rho = np.trace(m) - ginger.lowrank()[1].sum()
    assert ginger.discarded == pytest.approx(rho, rel=1e-3 if dtype == "float32" else 1e-9)
    assert ginger.tail_damping(damping, "tail") == pytest.approx(damping + ginger.discarded / (dim - rank))
    assert ginger.tail_damping(damping, "fd") == pytest.approx(damping + ginger.discarded)
    # Frequent-directions bound: (γ + ρ)I + UΣUᵀ ⪰ γI + M.
    if dtype == "float64":
        gap = ginger.structure(ginger.tail_damping(damping, "fd")).dense() - (damping * np.eye(dim) + m)
        assert np.linalg.eigvalsh(gap).min() >= -1e-10
    g = rng.standard_normal((dim, 2))
    for run, s in ((ginger, ginger.structure(damping)), (qng, qng.structure()), (diag, diag.structure(damping))):
        np.testing.assert_allclose(run.precondition(g, damping), np.linalg.solve(s.dense(), g), rtol=50 * tol, atol=tol)
    assert ginger.time_per_step > 0


# ---------------------------------------------------------------- end to end

TINY = StudyConfig(
    streams=("power", "digits-softmax"),
    steps=24,
    ranks=(2, 4),
    decays=(0.9, 0.99),
    dampings=(1e-2, 1e-1),
    seeds=(0,),
    rank=4,
    decay=0.9,
    damping=1e-2,
    checkpoints=3,
    num_gradients=3,
)


@pytest.fixture(scope="module")
def tiny_result():
    return run_study(TINY, progress=False)


def test_tiny_study_rows(tiny_result):
    rows = tiny_result.rows
    assert rows
    assert all(set(r) == set(COLUMNS) for r in rows)
    assert {r["method"] for r in rows} == set(METHODS)
    assert {r["step"] for r in rows} == {8, 16, 24}
    assert {r["dtype"] for r in rows if r["method"] == "ginger"} == {"float64", "float32"}
    for r in rows:
        if r["method"] == "exact":
            assert r["cosine"] == pytest.approx(1.0, abs=1e-12)
            assert r["decrease_fraction"] == pytest.approx(1.0, abs=1e-12)
            assert r["inv_spectral_error"] == pytest.approx(0.0, abs=1e-12)
        if r["method"] == "oracle":
            assert r["inv_spectral_error"] == pytest.approx(r["eckart_young_bound"], rel=1e-7)
            assert r["angle_max_deg"] == pytest.approx(0.0, abs=1e-6)
        if r["method"] in {"ginger", "ginger-sm"} and r["dtype"] == "float64":
            assert r["trace_gap"] < 1e-10
            assert r["dev_from_ginger64"] < (1e-13 if r["method"] == "ginger" else 1e-7)
        if r["method"] == "qng":
            assert r["effective_damping"] == pytest.approx(r["decay"] ** min(r["rank"], r["step"]), rel=1e-5)
        if r["method"] == "ginger" and r["damping_mode"] == "equal":
            assert r["damping"] == pytest.approx(r["decay"] ** min(r["rank"], r["step"]))
        for col in ("cosine", "decrease_fraction"):
            assert math.isfinite(r[col]), (r["method"], col)
        if r["method"] == "ginger-diagonal":
            # Diagonal + low rank: its spectral errors only at the default setting, NaN elsewhere.
            default = r["decay"] == TINY.decay and r["rank"] == TINY.rank
            default = default and r["damping"] in {TINY.damping, TINY.decay ** min(TINY.rank, r["step"])}
            for col in ("inv_spectral_error", "curv_spectral_error"):
                assert math.isfinite(r[col]) == default, (r, col)
        else:
            assert math.isfinite(r["inv_spectral_error"]), r["method"]
        # Nothing beats the oracle's inverse error at the same damping (Eckart–Young).
        if r["method"] in {"ginger", "ginger-sm", "qng"} and r["damping_mode"] == "equal":
            assert r["inv_spectral_error"] >= r["eckart_young_bound"] * (1 - 1e-9)


def test_tiny_study_outputs(tiny_result, tmp_path):
    paths = write_outputs(tiny_result, tmp_path)
    with paths["csv"].open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert len(rows) == len(tiny_result.rows)
    text_columns = {"stream", "backend", "dtype", "method", "damping_mode", "rank"}
    for row in rows:
        for key in set(COLUMNS) - text_columns:
            float(row[key])  # every number parses (no "np.float64(...)")
        assert row["rank"] == "" or int(row["rank"]) > 0
    assert float(rows[0]["dim"]) > 0
    for name in (
        "timeseries_equal",
        "timeseries_fixed",
        "sweep_rank",
        "sweep_damping",
        "sweep_decay",
        "precision",
        "spectra",
    ):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = paths["report"].read_text()
    assert "equal-damping" in report
    assert "| ginger |" in report
    text = summary_table(tiny_result)
    assert "Equal damping" in text
    assert "qng" in text
    h = headline(tiny_result)
    assert len(h["lines"]) >= 5
    assert 0.0 <= h["values"]["ginger_vs_qng_equal_inv_spectral_error"]["win_rate"] <= 1.0


def test_parallel_study_gives_the_same_rows(tiny_result, tmp_path):
    config = replace(TINY, streams=("power",), checkpoints=1)
    one = run_study(config, progress=False)
    seen = []
    two = run_study(replace(config, seeds=(0, 1)), progress=False, jobs=2, out_dir=tmp_path, on_pass=seen.append)
    timing = {"time_per_step_s", "time_vs_diag"}
    first = [r for r in two.rows if r["seed"] == 0]
    assert len(first) == len(one.rows)
    for a, b in zip(one.rows, first, strict=True):
        for key in COLUMNS:
            if key not in timing:
                assert a[key] == b[key] or (a[key] != a[key] and b[key] != b[key]), key
    # Each pass reached the files as it finished (in the order of finishing).
    assert sorted(part.rows[0]["seed"] for part in seen) == [0, 1]
    with (tmp_path / "study.csv").open() as fh:
        streamed = list(csv.DictReader(fh))
    assert len(streamed) == len(two.rows)
    assert sorted({r["seed"] for r in streamed}) == ["0", "1"]


def test_cli_study(tmp_path, capsys):
    from lowrank_ggn.cli import main

    out = tmp_path / "study"
    argv = ["study", "--quick", "--streams", "power", "--steps", "12", "--no-plots", "--jobs", "1", "--out", str(out)]
    assert main([*argv, "--no-progress", "--dtype", "float64", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "Headline" in printed
    assert (out / "study.csv").exists()
    assert (out / "report.md").exists()
    with (out / "study.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["seed"] for r in rows} == {"3"}
    assert {r["dtype"] for r in rows} == {"float64"}


def test_config_validation():
    with pytest.raises(ValueError, match="stream"):
        run_study(replace(TINY, streams=("nope",)), progress=False)
    with pytest.raises(ValueError, match="default rank"):
        run_study(replace(TINY, rank=3), progress=False)
    with pytest.raises(ValueError, match="rank"):
        run_study(replace(TINY, ranks=(2, 4, 600), rank=4), progress=False)
    with pytest.raises(ValueError, match="dtypes"):
        run_study(replace(TINY, dtypes=("float16",)), progress=False)
    with pytest.raises(ValueError, match="backend"):
        run_study(replace(TINY, backend="tensorflow"), progress=False)
    with pytest.raises(ValueError, match="jobs"):
        run_study(TINY, progress=False, jobs=0)
    with pytest.raises(ValueError, match="decay"):
        replace(TINY, decays=(0.9, 1.0)).validate()
    with pytest.raises(ValueError, match="damping"):
        replace(TINY, dampings=(1e-2, 0.0)).validate()


# ---------------------------------------------------------------- user streams, method selection, streaming


def _user_data(rng, steps=10, dim=9):
    return rng.standard_normal((steps, dim)) * np.arange(1, dim + 1) ** -1.0


USER = StudyConfig(
    streams=(),
    steps=10,
    ranks=(2, 3),
    decays=(0.9,),
    dampings=(1e-2,),
    seeds=(5, 6),
    dtypes=("float64",),
    rank=3,
    decay=0.9,
    damping=1e-2,
    checkpoints=2,
    num_gradients=3,
)


def _comparable(rows):
    timing = {"time_per_step_s", "time_vs_diag"}
    return [
        {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k not in timing}
        for r in rows
    ]


def test_user_streams_from_an_array_an_iterable_and_a_file(tmp_path):
    """One stream, three ways in; d_t is row t, g_t the next row (the first after the last), once with seed 0."""
    from lowrank_ggn.studies._runner import UserStream

    rng = np.random.default_rng(3)
    data = _user_data(rng)
    path = tmp_path / "mine.npy"
    np.save(path, data)
    a = run_study(replace(USER, user_streams={"mine": data}), progress=False)
    b = run_study(replace(USER, user_streams=[("mine", iter(list(data)))]), progress=False)
    c = run_study(replace(USER, user_streams=(UserStream.from_file(path),)), progress=False)
    assert a.rows
    assert _comparable(a.rows) == _comparable(b.rows) == _comparable(c.rows)
    assert {r["stream"] for r in a.rows} == {"mine"}
    assert {r["seed"] for r in a.rows} == {5}  # the first seed only: the stream does not depend on it
    assert {r["dim"] for r in a.rows} == {9}
    # The methods saw the rows: the final exact EMA is the EMA of the data.
    want = np.linalg.eigvalsh(lg.ema_dense(data, decay=0.9))[::-1]
    np.testing.assert_allclose([s["eigval"] for s in a.spectra], want, rtol=1e-10, atol=1e-14 * want[0])
    # g_t: the next vector, cyclically.
    steps = list(c.config.user_streams[0].steps(10))
    for t, item in enumerate(steps, start=1):
        np.testing.assert_array_equal(item.curvature, data[t - 1])
        np.testing.assert_array_equal(item.gradient, data[t % 10])
        assert math.isnan(item.loss)
    # A file-backed stream stays memory-mapped and pickles as its path.
    import pickle

    stream = c.config.user_streams[0]
    assert isinstance(stream.array, np.memmap)
    assert len(pickle.dumps(stream)) < data.nbytes


def test_user_stream_validation(tmp_path):
    from lowrank_ggn.studies._runner import UserStream

    with pytest.raises(ValueError, match="2-D"):
        UserStream("x", np.ones(4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        UserStream("x", np.array([[1.0, 2.0], [np.nan, 0.0]]))
    with pytest.raises(ValueError, match="d >= 2"):
        UserStream("x", np.ones((3, 1)))
    with pytest.raises(ValueError, match="T >= 1"):
        UserStream("x", np.ones((0, 3)))
    with pytest.raises(ValueError, match="not one of"):
        UserStream("power", np.ones((3, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        UserStream("x", np.ones((3, 3), dtype=complex))
    with pytest.raises(ValueError, match="does not exist"):
        UserStream.from_file(tmp_path / "none.npy")
    np.save(tmp_path / "ints.npy", np.ones((3, 3), dtype=np.int32))
    with pytest.raises(TypeError, match="real floats"):
        UserStream.from_file(tmp_path / "ints.npy")
    data = np.ones((4, 3))
    with pytest.raises(ValueError, match="fewer than steps"):
        run_study(replace(USER, ranks=(1, 2), rank=2, user_streams={"x": data}), progress=False)
    with pytest.raises(ValueError, match="own name"):
        replace(USER, steps=4, user_streams=[("x", data), ("x", data)]).validate()
    with pytest.raises(ValueError, match="rank"):
        replace(USER, steps=4, user_streams={"x": data}).validate()  # τ = 3 is not below d = 3
    with pytest.raises(ValueError, match="empty"):
        replace(USER, streams=()).validate()


def test_method_selection_runs_and_records_only_those(monkeypatch):
    config = replace(USER, user_streams={"mine": _user_data(np.random.default_rng(1))})
    full = run_study(config, progress=False)
    made = []
    original = QNGRun.__init__

    def spy(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(QNGRun, "__init__", spy)
    part = run_study(replace(config, methods=("oracle", "ginger-fd")), progress=False)
    assert not made  # QNG was not chosen: it did not run
    assert {r["method"] for r in part.rows} == {"oracle", "ginger-fd"}
    # The rows of the chosen methods are the same as in the full study.
    keep = [r for r in full.rows if r["method"] in {"oracle", "ginger-fd"}]
    assert _comparable(part.rows) == _comparable(keep)
    h = headline(part)
    assert all("QNG" not in line and "ginger-tail" not in line for line in h["lines"])
    with pytest.raises(ValueError, match="methods"):
        replace(config, methods=("newton",)).validate()
    with pytest.raises(ValueError, match="methods"):
        replace(config, methods=()).validate()


def test_rows_are_written_as_each_pass_finishes(tmp_path):
    """An interrupted study keeps, in study.csv, every pass it finished."""
    config = replace(TINY, streams=("power",), steps=6, seeds=(0, 1, 2), checkpoints=1, dtypes=("float64",))
    seen = []

    def interrupt(part):
        seen.append(len(part.rows))
        with (tmp_path / "study.csv").open() as fh:
            assert len(list(csv.DictReader(fh))) == sum(seen)  # on disk before the next pass starts
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_study(config, progress=False, out_dir=tmp_path, on_pass=interrupt)
    with (tmp_path / "study.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert len(rows) == sum(seen)
    with (tmp_path / "spectra.csv").open() as fh:
        assert {r["seed"] for r in csv.DictReader(fh)} == {"0", "1"}


def test_output_folder_is_checked_before_computing(tmp_path, monkeypatch):
    from lowrank_ggn.studies import _runner

    def refuse(*args, **kwargs):
        raise AssertionError("computed before checking the output folder")

    monkeypatch.setattr(_runner, "_run_pass", refuse)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad in (blocker, blocker / "below"):
        with pytest.raises(ValueError, match="existing file"):
            run_study(TINY, progress=False, out_dir=bad)


def test_headline_when_the_oracle_is_exact():
    """t ≤ τ: M_t has rank ≤ τ, the oracle's inverse error is 0 and the ratio to it is undefined, not a crash."""
    config = replace(TINY, streams=("power",), steps=4, dtypes=("float64",), checkpoints=1)
    result = run_study(config, progress=False)
    oracle = [r for r in result.rows if r["method"] == "oracle" and r["rank"] == 4]
    assert any(r["inv_spectral_error"] == 0.0 for r in oracle)
    values = headline(result)["values"]["ginger_vs_oracle"]
    assert values["inv_error_ratio_n"] < values["n"]
    assert math.isfinite(values["inv_error_ratio_median"])
    assert "Headline" in summary_table(result)


# ---------------------------------------------------------------- at scale: the matrix-free path


def _window_user_stream(dim=300, steps=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((steps, dim)) * np.linspace(3.0, 0.1, dim)


WINDOW = StudyConfig(
    streams=(),
    steps=30,
    large_steps=30,
    ranks=(2, 8),
    large_ranks=None,
    decays=(0.95,),
    dampings=(1e-2, 1e-1),
    seeds=(0,),
    rank=8,
    decay=0.95,
    damping=1e-1,
    checkpoints=2,
    large_checkpoints=2,
    num_gradients=4,
)


def _key(r):
    return (r["method"], r["dtype"], r["rank"], r["damping_mode"], r["damping"], r["step"])


SUBSPACE_COLUMNS = ("lambda_next", "eckart_young_bound", "angle_max_deg", "subspace_overlap", "captured_share")


LANCZOS_COLUMNS = ("inv_spectral_error", "curv_spectral_error", "certificate_tightness")


def test_window_path_matches_the_dense_path(monkeypatch):
    """Above DENSE_LIMIT every metric is computed matrix-free; on a stream small enough for both, they agree."""
    from lowrank_ggn.studies import _methods, _runner

    config = replace(WINDOW, user_streams=(("u", _window_user_stream()),))
    dense = {_key(r): r for r in run_study(config, progress=False).rows}
    monkeypatch.setattr(_runner, "DENSE_LIMIT", 100)
    monkeypatch.setattr(_methods, "DENSE_LIMIT", 100)  # ginger-diagonal's operator stays diagonal + low-rank
    assert config.is_large("u")
    window = {_key(r): r for r in run_study(config, progress=False).rows}
    assert {k[0] for k in window} == set(METHODS) - {"exact"}  # the window is the reference
    assert set(window) <= set(dense)
    skip = {"time_per_step_s", "time_vs_diag", "dev_from_ginger64", "sigma_relerr", "trace_gap", "angle_max_deg"}
    compared = 0
    for key, w in window.items():
        d = dense[key]
        assert w["memory_floats"] == d["memory_floats"], key
        for col in COLUMNS[COLUMNS.index("loss") + 1 :]:
            if key[0] in {"diag", "ginger-diagonal"} and col in LANCZOS_COLUMNS:
                # Lanczos only at the last step, default τ and γ (fixed, and equal γ = α^τ).
                lanczos = key[-1] == config.large_steps and key[2] in {"", config.rank}
                lanczos = lanczos and key[4] in {config.damping, config.decay**config.rank}
                if not lanczos:
                    assert math.isnan(w[col]), key
                if col == "inv_spectral_error" or not lanczos:
                    continue  # Lanczos: NaN when it has not converged
            if col in skip:
                continue  # timings, rounding-level checks
            a, b = d[col], w[col]
            if key[0] == "ginger-diagonal" and col in SUBSPACE_COLUMNS:
                assert math.isnan(b), (key, col)  # no subspace metrics for a non-scalar diagonal at scale
                continue
            if isinstance(a, float) and math.isnan(a):
                assert math.isnan(b), (key, col)
                continue
            assert b == pytest.approx(a, rel=1e-6, abs=1e-9), (key, col)
            compared += 1
    assert compared > 500
    # The rounding-level checks stay at rounding level.
    for w in window.values():
        if w["method"] in {"ginger", "ginger-sm"} and w["dtype"] == "float64":
            assert w["trace_gap"] < 1e-10


def test_per_tensor_window_path_against_a_dense_block_diagonal_reference(monkeypatch):
    """A stream split in blocks: one Ginger state per block, against the block-diagonal exact EMA, densely."""
    from lowrank_ggn.studies import _runner

    x = _window_user_stream(dim=120, steps=24, seed=3)
    blocks = (slice(0, 70), slice(70, 115), slice(115, 120))  # the last block is smaller than τ + 1
    monkeypatch.setattr(_runner, "DENSE_LIMIT", 50)
    monkeypatch.setattr(_runner, "_blocks_of", lambda stream, dim: blocks)
    config = replace(
        WINDOW,
        user_streams=(("u", x),),
        steps=24,
        large_steps=24,
        methods=("ginger", "diag", "identity", "oracle"),
        dtypes=("float64",),
    )
    rows = run_study(config, progress=False).rows
    alpha, tau, gamma, steps, q = 0.95, 8, 1e-1, 24, 4
    m = np.zeros((120, 120))
    states = [lg.ginger_init(b.stop - b.start, min(tau, b.stop - b.start - 1), dtype=np.float64) for b in blocks]
    for t in range(steps):
        d = x[t]
        for j, b in enumerate(blocks):
            m[b, b] = alpha * m[b, b] + (1 - alpha) * np.outer(d[b], d[b])
            states[j] = lg.ginger_update(states[j], d[b], decay=alpha)
    g = np.stack([x[t % steps] for t in range(steps - q + 1, steps + 1)], axis=1)
    approx = scipy.linalg.block_diag(*[(s.basis * s.eigvals) @ s.basis.T for s in states]) + gamma * np.eye(120)
    exact = m + gamma * np.eye(120)
    inv_a, inv_e = np.linalg.inv(approx), np.linalg.inv(exact)
    lam = np.linalg.eigvalsh(exact)
    want_inv = np.abs(np.linalg.eigvalsh(inv_a - inv_e)).max() * lam[0]
    want_curv = np.abs(np.linalg.eigvalsh(approx - exact)).max() / lam[-1]
    s, b = inv_a @ g, inv_e @ g
    want_cos = np.mean((s * b).sum(0) / np.linalg.norm(s, axis=0) / np.linalg.norm(b, axis=0))
    achieved = (g * s).sum(0) - 0.5 * (s * (exact @ s)).sum(0)
    want_dec = np.mean(achieved / (0.5 * (g * b).sum(0)))
    (row,) = [
        r
        for r in rows
        if r["method"] == "ginger" and r["step"] == steps and r["damping_mode"] == "fixed" and r["damping"] == gamma
        if r["rank"] == tau
    ]
    assert row["inv_spectral_error"] == pytest.approx(want_inv, rel=1e-7)
    assert row["curv_spectral_error"] == pytest.approx(want_curv, rel=1e-7)
    assert row["cosine"] == pytest.approx(want_cos, rel=1e-9)
    assert row["decrease_fraction"] == pytest.approx(want_dec, rel=1e-7)
    assert row["memory_floats"] == sum(s.basis.size + s.eigvals.size + 2 for s in states)  # discarded, escaped
    assert math.isnan(row["angle_max_deg"])  # no subspace metrics for a block-diagonal approximation
    # The certificate: ‖G̃ − G‖₂ ≤ max_j ρ_j.
    assert row["rho_certificate"] == pytest.approx(max(float(s.discarded) for s in states))
    assert 0 < row["certificate_tightness"] <= 1 + 1e-9
    # The diagonal EMA and the identity, per block, with the same reference.
    (diag,) = [
        r
        for r in rows
        if r["method"] == "diag" and r["step"] == steps and r["damping_mode"] == "fixed" and r["damping"] == gamma
    ]
    v = sum(alpha ** (steps - 1 - t) * (1 - alpha) * x[t] ** 2 for t in range(steps))
    s = g / (gamma + v)[:, None]
    assert diag["cosine"] == pytest.approx(
        np.mean((s * b).sum(0) / np.linalg.norm(s, axis=0) / np.linalg.norm(b, axis=0)), rel=1e-9
    )
    want = np.abs(np.linalg.eigvalsh(np.diag(1 / (gamma + v)) - inv_e)).max() * lam[0]
    assert diag["inv_spectral_error"] == pytest.approx(want, rel=1e-6) or math.isnan(diag["inv_spectral_error"])


def test_protocol_methods_plug_in_by_name():
    """Any approximation of the protocol runs through the one adapter; ginger_product reproduces ginger."""
    config = replace(
        WINDOW,
        user_streams=(("u", _window_user_stream(dim=60, steps=20)),),
        steps=20,
        approximations=(lg.ginger_product(rank=3, decay=0.5),),  # rank and decay are the study's
    )
    assert "ginger-product" in config.methods
    rows = run_study(config, progress=False).rows
    by = {_key(r): r for r in rows}
    product = [r for r in rows if r["method"] == "ginger-product"]
    assert product
    for r in product:
        ref = by["ginger", r["dtype"], r["rank"], r["damping_mode"], r["damping"], r["step"]]
        tol = 1e-9 if r["dtype"] == "float64" else 1e-4
        for col in ("inv_spectral_error", "curv_spectral_error", "cosine", "decrease_fraction", "captured_share"):
            assert r[col] == pytest.approx(ref[col], rel=tol, abs=tol), col
        assert r["rho_certificate"] == pytest.approx(ref["rho_certificate"], rel=tol)
    with pytest.raises(ValueError, match="protocol"):
        replace(WINDOW, user_streams=(("u", _window_user_stream(dim=60)),), approximations=(object(),)).validate()


def test_method_names_memory_and_certificates(tiny_result):
    """The method names of the issue, the floats of each state, and ρ bounding the true curvature error."""
    for name in ("ginger", "ginger-sm", "qng", "diag", "identity", "oracle", "oracle-tail", "ginger-tail", "ginger-fd"):
        assert name in METHODS
    for r in tiny_result.rows:
        tau, dim = r["rank"], r["dim"]
        t = tau if tau != "" else 0
        want = {
            "ginger": dim * t + t + 2,  # U, σ, discarded, escaped
            "ginger-sm": dim * t + t + 2,
            "qng": dim * t + 3 * t,
            "oracle": dim * t + t,
            "diag": dim,
            "identity": 1,
            "exact": dim * dim,
        }.get(r["method"])
        if want is not None:
            assert r["memory_floats"] == want, r["method"]
        if r["method"] in {"ginger", "ginger-sm", "ginger-tail", "ginger-fd"} and r["dtype"] == "float64":
            assert r["certificate_tightness"] <= 1 + 1e-9 or math.isnan(r["certificate_tightness"])


def test_report_at_both_scales_and_robust_figure_limits(monkeypatch, tmp_path):
    from lowrank_ggn.studies import _report, _runner

    monkeypatch.setattr(_runner, "DENSE_LIMIT", 600)
    monkeypatch.setattr(_report, "DENSE_LIMIT", 600)
    config = replace(
        WINDOW,
        streams=("power",),
        steps=20,
        user_streams=(("u", _window_user_stream(dim=700, steps=20)),),
        large_steps=16,
    )
    result = run_study(config, progress=False)
    assert {r["step"] for r in result.rows if r["stream"] == "u"} == {8, 16}
    h = _report.scale_headline(result)
    assert set(h["labels"].values()) == {"d = 500", "d = 700"}
    for scale in ("small", "large"):
        entry = h["comparisons"]["equal damping", "qng", scale]
        assert 0 <= entry["inv_spectral_error"]["win_rate"] <= 1
        assert h["comparisons"]["equal memory", "diag", scale]["memory_ratio"] > 1
    assert len(h["verdict"]) == 3  # the overall sentence, then one per scale
    paths = write_outputs(result, tmp_path)
    text = paths["headline"].read_text()
    assert "d = 500: inv err" in text
    assert "d = 700: inv err" in text
    assert text in paths["report"].read_text()
    # Figure limits come from robust quantiles: one outlier does not stretch them.
    values = np.concatenate([np.linspace(0.5, 1.0, 50), [-1e4]])
    lo, hi = _report._robust_limits(values, "decrease_fraction")
    assert -1 < lo < 0.5
    assert hi >= 1


def test_read_study_reproduces_the_report(tiny_result, tmp_path):
    """The headline is generated again from the files a study wrote, identically."""
    from lowrank_ggn.studies import read_study, scale_markdown

    write_outputs(tiny_result, tmp_path, plots=False)
    again = read_study(tmp_path, TINY, seconds=tiny_result.seconds)
    assert len(again.rows) == len(tiny_result.rows)
    assert scale_markdown(again) == scale_markdown(tiny_result)
    assert summary_table(again) == summary_table(tiny_result)
    with pytest.raises(ValueError, match=r"no study\.csv"):
        read_study(tmp_path / "nothing")
