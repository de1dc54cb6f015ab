"""The sampled-label gradient (Eq 8): its expected outer product is the exact GGN/Fisher (Eq 4–6).

The expectation over the sampled labels is computed exactly: by enumerating
every label combination of a small batch (categorical, Bernoulli), or, for the
Gaussian, from E[εεᵀ] = I (d is linear in ε). It is compared with
``(1/N) Σ_n J_nᵀ H_n J_n`` computed from the model's Jacobian and the
closed-form output Hessians ``diag(p) − ppᵀ``, ``p(1 − p)`` and ``I/s²``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
torch = pytest.importorskip("torch")
jl = pytest.importorskip("lowrank_ggn.optim.jax_likelihoods")
tl = pytest.importorskip("lowrank_ggn.optim.torch_likelihoods")

B, D, H = 2, 3, 4  # batch, input features, hidden units
OUT = {"categorical": 3, "bernoulli": 2, "gaussian": 2}
VARIANCE = 0.7


@pytest.fixture(autouse=True)
def _x64():
    jax.config.update("jax_enable_x64", True)


def _problem(likelihood, seed=0):
    rng = np.random.default_rng(seed)
    k = OUT[likelihood]
    theta = rng.standard_normal(D * H + H * k + k)
    x = rng.standard_normal((B, D))
    return theta, x, k


def _model_np(theta, x, k, lib):
    w1 = theta[: D * H].reshape(D, H)
    w2 = theta[D * H : D * H + H * k].reshape(H, k)
    b2 = theta[D * H + H * k :]
    return lib.tanh(x @ w1) @ w2 + b2


def _exact_ggn(likelihood, theta, x, k):
    """(1/N) Σ_n J_nᵀ H_n J_n with closed-form output Hessians, in float64."""
    fn = lambda th: _model_np(th, jnp.asarray(x), k, jnp)  # noqa: E731
    jac = np.asarray(jax.jacfwd(fn)(jnp.asarray(theta)))  # (B, k, P)
    f = np.asarray(fn(jnp.asarray(theta)))
    ggn = np.zeros((theta.size, theta.size))
    for n in range(B):
        if likelihood == "categorical":
            p = np.exp(f[n] - f[n].max())
            p /= p.sum()
            hess = np.diag(p) - np.outer(p, p)
        elif likelihood == "bernoulli":
            p = 1 / (1 + np.exp(-f[n]))
            hess = np.diag(p * (1 - p))
        else:
            hess = np.eye(k) / VARIANCE
        ggn += jac[n].T @ hess @ jac[n]
    return ggn / B


def _label_sets(likelihood, f, k):
    """(labels, probability) pairs whose weighted d dᵀ sum is E[d dᵀ] exactly."""
    if likelihood == "categorical":
        p = np.exp(f - f.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        for combo in itertools.product(range(k), repeat=B):
            yield np.array(combo), np.prod([p[n, c] for n, c in enumerate(combo)])
    elif likelihood == "bernoulli":
        p = 1 / (1 + np.exp(-f))
        for bits in itertools.product((0.0, 1.0), repeat=B * k):
            y = np.array(bits).reshape(B, k)
            yield y, np.prod(np.where(y == 1, p, 1 - p))
    else:  # y = f + s e_j: d is linear in ε and E[εεᵀ] = I
        for j in range(B * k):
            e = np.zeros(B * k)
            e[j] = 1.0
            yield f + np.sqrt(VARIANCE) * e.reshape(B, k), 1.0


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
def test_jax_expected_outer_product_is_the_exact_ggn(likelihood):
    theta, x, k = _problem(likelihood)
    fn = lambda th: _model_np(th, jnp.asarray(x), k, jnp)  # noqa: E731
    outputs, vjp = jax.vjp(fn, jnp.asarray(theta))
    f = np.asarray(outputs)
    expected = np.zeros((theta.size, theta.size))
    for labels, prob in _label_sets(likelihood, f, k):
        cot = jl.sampled_label_cotangent(None, outputs, likelihood, variance=VARIANCE, labels=jnp.asarray(labels))
        d = np.asarray(vjp(cot)[0])
        expected += prob * np.outer(d, d)
    ggn = _exact_ggn(likelihood, theta, x, k)
    np.testing.assert_allclose(expected, ggn, rtol=1e-10, atol=1e-12 * np.abs(ggn).max())


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
def test_torch_expected_outer_product_is_the_exact_ggn(likelihood):
    theta, x, k = _problem(likelihood, seed=1)
    th = torch.tensor(theta, requires_grad=True)
    outputs = _model_np(th, torch.tensor(x), k, torch)
    f = outputs.detach().numpy()
    expected = np.zeros((theta.size, theta.size))
    for labels, prob in _label_sets(likelihood, f, k):
        cot = tl.sampled_label_cotangent(outputs, likelihood, variance=VARIANCE, labels=torch.tensor(labels))
        (d,) = torch.autograd.grad(outputs, [th], grad_outputs=cot, retain_graph=True)
        expected += prob * np.outer(d.numpy(), d.numpy())
    ggn = _exact_ggn(likelihood, theta, x, k)
    np.testing.assert_allclose(expected, ggn, rtol=1e-10, atol=1e-12 * np.abs(ggn).max())


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
def test_jax_and_torch_cotangents_agree(likelihood):
    rng = np.random.default_rng(2)
    f = rng.standard_normal((4, 3))
    labels = {"categorical": rng.integers(0, 3, 4), "bernoulli": rng.integers(0, 2, (4, 3)).astype(float)}.get(
        likelihood, rng.standard_normal((4, 3))
    )
    cj = jl.sampled_label_cotangent(None, jnp.asarray(f), likelihood, labels=jnp.asarray(labels), normalizer=7)
    ct = tl.sampled_label_cotangent(torch.tensor(f), likelihood, labels=torch.tensor(labels), normalizer=7)
    np.testing.assert_allclose(np.asarray(cj), ct.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
def test_sampling_distribution(likelihood):
    """Monte-Carlo moments of the sampled labels, within 6 standard errors."""
    f = np.array([[0.3, -1.0, 1.2]])
    n = 20000
    fj = jnp.asarray(np.repeat(f, n, 0))
    ft = torch.tensor(np.repeat(f, n, 0))
    yj = np.asarray(jl.sample_labels(jax.random.key(0), fj, likelihood, variance=VARIANCE), dtype=float)
    yt = (
        tl.sample_labels(ft, likelihood, variance=VARIANCE, generator=torch.Generator().manual_seed(0))
        .numpy()
        .astype(float)
    )
    for y in (yj, yt):
        if likelihood == "categorical":
            p = np.exp(f[0]) / np.exp(f[0]).sum()
            freq = np.bincount(y.astype(int), minlength=3) / n
            assert np.all(np.abs(freq - p) < 6 * np.sqrt(p * (1 - p) / n))
        elif likelihood == "bernoulli":
            p = 1 / (1 + np.exp(-f[0]))
            assert np.all(np.abs(y.mean(0) - p) < 6 * np.sqrt(p * (1 - p) / n))
        else:
            assert np.all(np.abs(y.mean(0) - f[0]) < 6 * np.sqrt(VARIANCE / n))
            assert np.all(np.abs(y.var(0) / VARIANCE - 1) < 6 * np.sqrt(2 / n))


def test_jax_helpers_share_one_forward_pass_and_agree():
    import optax

    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.standard_normal((5, 4)))
    x = jnp.asarray(rng.standard_normal((6, 5)))
    y = jnp.asarray(rng.integers(0, 4, 6))
    fn = lambda w: jnp.tanh(x @ w)  # noqa: E731
    key = jax.random.key(7)
    loss, grads, curv, outputs = jax.jit(jl.value_grad_and_curvature, static_argnums=(0, 4))(
        fn, w, y, key, "categorical"
    )
    ref_loss, ref_grads = jax.value_and_grad(
        lambda w: optax.softmax_cross_entropy_with_integer_labels(fn(w), y).mean()
    )(w)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads), np.asarray(ref_grads), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(
        np.asarray(curv), np.asarray(jl.sampled_label_gradient(fn, w, key, "categorical")), rtol=1e-12
    )
    np.testing.assert_allclose(np.asarray(outputs), np.asarray(fn(w)))
    # the curvature vector uses sampled, not observed, labels: E[d] = 0, while the gradient is not 0
    keys = jax.random.split(jax.random.key(0), 4000)
    mean_d = np.asarray(jax.vmap(lambda k: jl.sampled_label_gradient(fn, w, k, "categorical"))(keys).mean(0))
    sd = np.asarray(jax.vmap(lambda k: jl.sampled_label_gradient(fn, w, k, "categorical"))(keys).std(0))
    assert np.all(np.abs(mean_d) < 6 * sd / np.sqrt(4000) + 1e-12)


def test_negative_log_likelihoods_match_optax():
    import optax

    rng = np.random.default_rng(4)
    f = jnp.asarray(rng.standard_normal((5, 3)))
    yb = jnp.asarray(rng.integers(0, 2, (5, 3)).astype(float))
    np.testing.assert_allclose(
        np.asarray(jl.negative_log_likelihood(f, yb, "bernoulli")),
        np.asarray(optax.sigmoid_binary_cross_entropy(f, yb).sum(1)),
        rtol=1e-12,
    )
    yg = jnp.asarray(rng.standard_normal((5, 3)))
    np.testing.assert_allclose(
        np.asarray(jl.negative_log_likelihood(f, yg, "gaussian", variance=2.0)),
        np.asarray(((f - yg) ** 2).sum(1) / 4.0),
        rtol=1e-12,
    )


def test_torch_gradient_helper_and_generator():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    unused = torch.nn.Parameter(torch.ones(2))
    params = [*model.parameters(), unused]
    outputs = model(torch.randn(5, 3))
    d1 = tl.sampled_label_gradient(outputs, params, "categorical", generator=torch.Generator().manual_seed(3))
    d2 = tl.sampled_label_gradient(outputs, params, "categorical", generator=torch.Generator().manual_seed(3))
    for a, b, p in zip(d1, d2, params, strict=True):
        assert a.shape == p.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(d1[-1], torch.zeros(2))
    outputs.sum().backward()  # the graph was retained for the loss's own backward


@pytest.mark.parametrize("lib", ["jax", "torch"])
def test_bad_input(lib):
    if lib == "jax":
        cot = lambda f, lik, **kw: jl.sampled_label_cotangent(jax.random.key(0), f, lik, **kw)  # noqa: E731
        arr = jnp.asarray
    else:
        cot = tl.sampled_label_cotangent
        arr = torch.tensor
    f = arr(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="likelihood"):
        cot(f, "poisson")
    with pytest.raises(TypeError, match="floating"):
        cot(arr(np.zeros((2, 3), dtype=np.int64)), "categorical")
    with pytest.raises(ValueError, match="shape"):
        cot(arr(np.zeros(3)), "categorical")
    with pytest.raises(ValueError, match="variance"):
        cot(f, "gaussian", variance=0.0)
    with pytest.raises(ValueError, match="normalizer"):
        cot(f, "bernoulli", normalizer=-1)
