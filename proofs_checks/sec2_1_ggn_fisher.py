r"""§2.1 of the paper: the Gauss–Newton matrix, the Fisher, and their stochastic EMA (Eq 1–8).

The model is the softmax network of :mod:`proofs_checks._model` on random
inputs. Hessians are taken by the complex step of the analytic gradient, so
they are exact to rounding and independent of the Gauss–Newton formula;
expectations over labels and mini-batches are exact finite sums.
"""

from __future__ import annotations

import numpy as np

from proofs_checks._context import Context
from proofs_checks._model import MLP, complex_step
from proofs_checks._numerics import rel_err, sym_eigvalsh
from proofs_checks._registry import Outcome, check


def _problem(ctx: Context, *, m: int = 12) -> tuple[MLP, np.ndarray, np.ndarray, np.ndarray]:
    """Draw a softmax network (n=4, hidden 6, c=3, so d=51), parameters, inputs and labels (NumPy)."""
    model = MLP(4, 6, 3)
    rng = ctx.rng
    theta = model.init(rng)
    x = rng.standard_normal((m, model.n_in))
    labels = rng.integers(0, model.n_classes, m)
    return model, theta, x, labels


def _inputs(model: MLP, m: int) -> str:
    return f"softmax MLP {model.n_in}-{model.n_hidden}-{model.n_classes} (d={model.dim}), m={m} random samples"


@check(
    "2.1-hessian",
    section="§2.1",
    statement="Hessian = GGN + residual (display before Eq 4)",
    what=r"$\nabla^2\mathcal L = \frac1m\sum J^\top H_f J + \frac1m\sum_i\sum_j \partial^2 f^{(j)}"
    r"\,\partial\mathcal L/\partial f^{(j)}$ with the Hessian and the residual by complex step",
)
def hessian_decomposition(ctx: Context) -> Outcome:
    """Compare the Hessian of the loss with the GGN plus the residual term, entry by entry."""
    model, theta, x_np, labels = _problem(ctx)
    m, d = x_np.shape[0], model.dim
    x = ctx.asarray(x_np)
    y = ctx.asarray(np.eye(model.n_classes)[labels])
    th = ctx.asarray(theta[None, :])
    ggn = ctx.to_numpy(ctx.jit(model.ggn)(th, x))
    grad = ctx.to_numpy(ctx.jit(model.grad)(th, x, y))[0]
    jac = ctx.to_numpy(ctx.jit(model.jacobian)(th, x))[0]
    resid = ctx.to_numpy(ctx.jit(model.probs)(th, x))[0] - ctx.to_numpy(y)
    r_b = ctx.asarray(resid)

    hess = complex_step(ctx, lambda t: model.grad(t, x, y), theta)
    residual = complex_step(ctx, lambda t: model.grad(t, x, y, residual=r_b), theta)
    grad_cs = complex_step(ctx, lambda t: model.loss(t, x, y), theta)
    jac_cs = complex_step(ctx, lambda t: model.forward(t, x)[1], theta)

    tol = ctx.tol(40 * np.sqrt(d))
    out = Outcome(_inputs(model, m) + ", true labels")
    out.add(r"analytic $J$ vs complex step, rel. max error", rel_err(np.moveaxis(jac_cs, 0, -1), jac), tol)
    out.add(
        r"$\nabla\mathcal L = \frac1m\sum J^\top(p-y)$ vs complex step, rel. max error", rel_err(grad, grad_cs), tol
    )
    out.add(
        r"$\|\nabla^2\mathcal L - (G + R)\|_{\max} / \|\nabla^2\mathcal L\|_{\max}$",
        rel_err(ggn + residual, hess),
        tol,
        headline=True,
    )
    out.add(r"Hessian symmetric: $\|H - H^\top\|_{\max}/\|H\|_{\max}$", rel_err(hess.T, hess), tol)
    share = np.abs(residual).max() / np.abs(hess).max()
    out.add(r"residual is not negligible here: $\|R\|_{\max}/\|H\|_{\max}$", share, 1e-2, ">=")
    w_g = sym_eigvalsh(ggn)
    out.add(r"GGN is PSD: $\lambda_{\min}(G)/\lambda_{\max}(G)$", w_g[-1] / w_g[0], -tol, ">=")
    w_h = sym_eigvalsh(hess)
    out.add(
        r"$\lambda_{\min}(\nabla^2\mathcal L)/\lambda_{\max}$ (negative: the Hessian is indefinite)",
        w_h[-1] / w_h[0],
        form="info",
    )
    out.note(
        "The Hessian is the complex-step Jacobian of the analytic gradient and the residual term the "
        "complex-step Jacobian of $\\theta\\mapsto\\frac1m\\sum_i J_i(\\theta)^\\top r_i$ with $r_i = p_i - y_i$ "
        "held fixed; neither uses the Gauss–Newton formula. The GGN is PSD while the Hessian usually is not, "
        "which is the paper's reason to precondition with the GGN."
    )
    return out


@check(
    "eq5",
    section="§2.1",
    statement="Eq 5: the Hessian in the logits is the expected outer product of scores",
    what=r"$\partial^2\mathcal L(\theta;x,y)/\partial f^2 = \mathbb E_{\hat y\sim r(\cdot|f)}"
    r"[\nabla_f\log r\,\nabla_f\log r^\top]$ for every label $y$",
)
def eq5_output_hessian(ctx: Context) -> Outcome:
    """Complex-step Hessian of −log softmax(f)_y in f against the exact expectation over ŷ."""
    xp = ctx.xp
    model, theta, x_np, _ = _problem(ctx)
    c, m = model.n_classes, x_np.shape[0]
    f0 = ctx.to_numpy(ctx.jit(model.forward)(ctx.asarray(theta[None, :]), ctx.asarray(x_np))[1])[0]  # (m, c)
    p = np.exp(f0 - f0.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    # Exact expectation over the sampled label ŷ ~ softmax(f): Σ_k p_k (e_k − p)(e_k − p)ᵀ.
    centred = np.eye(c)[None, :, :] - p[:, None, :]  # [i, k, :] = e_k − p_i
    expected = np.einsum("ik,ika,ikb->iab", p, centred, centred)
    labels = ctx.asarray(np.eye(c))  # row y = e_y

    def grad_f(f: object) -> object:  # (P, m, c) -> (P, y, m, c): ∇_f(−log p_y) = p − e_y, every label y
        return xp.exp(MLP.log_softmax(f))[:, None, :, :] - labels[None, :, None, :]

    def nll(f: object) -> object:  # (P, m, c) -> (P, y, m): −log p_y, every label y
        return -xp.matrix_transpose(MLP.log_softmax(f))

    # Complex step along logit j of every sample at once (the samples do not interact).
    h = 1e-20
    pert = ctx.asarray(f0[None, :, :] + 1j * h * np.eye(c)[:, None, :], complex_=True)  # (j, m, c)
    hess = ctx.to_numpy(xp.imag(ctx.jit(grad_f)(pert))) / h  # [j, y, i, k] = ∂²L_y/∂f_j∂f_k at sample i
    grads = ctx.to_numpy(xp.imag(ctx.jit(nll)(pert))) / h  # [j, y, i] = ∂L_y/∂f_j
    hess = np.moveaxis(hess, 0, -2)  # [y, i, j, k]
    worst_grad = rel_err(np.moveaxis(grads, 0, -1), p[None, :, :] - np.eye(c)[:, None, :])  # [y, i, j]
    worst = max(rel_err(hess[y], expected) for y in range(c))
    out = Outcome(_inputs(model, m) + f", every label y ∈ {{0, …, {c - 1}}}")
    out.add(
        r"max over $y$: rel. error of $\partial^2\mathcal L/\partial f^2$ (complex step) vs $\mathbb E_{\hat "
        r"y}[\cdot]$",
        worst,
        ctx.tol(50),
    )
    out.add(r"gradient in the logits $p - e_y$ vs complex step of $-\log p_y$ (rel.)", worst_grad, ctx.tol(50))
    w = np.linalg.eigvalsh(expected)
    out.add(r"$\operatorname{diag}(p)-pp^\top$ is PSD: $\min\lambda$ (rel.)", w.min() / w.max(), -ctx.tol(50), ">=")
    out.note(
        "For the softmax, $\\nabla_f(-\\log p_y) = p - e_y$, so the Hessian in the logits is "
        "$\\operatorname{diag}(p) - pp^\\top$ whatever the label; the right-hand side is the exact "
        "expectation $\\sum_k p_k (e_k - p)(e_k - p)^\\top$."
    )
    return out


def _fisher_pieces(
    ctx: Context, model: MLP, theta: np.ndarray, x_np: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GGN (Eq 4), score vectors (m, c, d) and probabilities (m, c), from the backend, as float64."""
    th, x = ctx.asarray(theta[None, :]), ctx.asarray(x_np)
    return (
        ctx.to_numpy(ctx.jit(model.ggn)(th, x)),
        ctx.to_numpy(ctx.jit(model.scores)(th, x)),
        ctx.to_numpy(ctx.jit(model.probs)(th, x))[0],
    )


@check(
    "eq4-6",
    section="§2.1",
    statement="Eq 4 = Eq 6: the GGN of a softmax model is its Fisher",
    what=r"$\frac1m\sum_i J_i^\top H_i J_i = \frac1m\sum_i \mathbb E_{\hat y\sim p_\theta(\cdot|x_i)}"
    r"[\nabla_\theta\log p_\theta(\hat y|x_i)\nabla_\theta\log p_\theta(\hat y|x_i)^\top]$, exact expectation",
)
def eq4_6_ggn_is_fisher(ctx: Context) -> Outcome:
    """GGN against the Fisher by exact expectation over labels; the empirical Fisher differs."""
    model, theta, x_np, labels = _problem(ctx)
    m = x_np.shape[0]
    ggn, scores, p = _fisher_pieces(ctx, model, theta, x_np)
    fisher = np.einsum("ik,ika,ikb->ab", p, scores, scores) / m
    true = scores[np.arange(m), labels]
    empirical = true.T @ true / m
    out = Outcome(_inputs(model, m))
    out.add(
        r"$\|G_{\text{Eq 4}} - F_{\text{Eq 6}}\|_{\max}/\|G\|_{\max}$", rel_err(fisher, ggn), ctx.tol(50), headline=True
    )
    out.add(
        r"control: the empirical Fisher (true labels) differs, $\|F_{\text{emp}} - G\|_{\max}/\|G\|_{\max}$",
        rel_err(empirical, ggn),
        1e-2,
        ">=",
    )
    out.note(
        "Eq 5 substituted into Eq 4 gives Eq 6 (the paper says “(6) into (5)”, an erratum shown in its own "
        "check). The labels must be sampled from the model: the empirical Fisher with the true labels is "
        "a different matrix."
    )
    return out


def _eq8_distribution(
    ctx: Context, model: MLP, theta: np.ndarray, x_np: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the exact law of d_t (Eq 8) for |B| = 2 drawn with replacement: atoms (N, d), weights (N,).

    Also returns the GGN and the score vectors (m, c, d).
    """
    ggn, scores, p = _fisher_pieces(ctx, model, theta, x_np)
    m, _, d = scores.shape
    atoms = (scores[:, :, None, None, :] + scores[None, None, :, :, :]) / np.sqrt(2)
    weights = (p[:, :, None, None] * p[None, None, :, :]) / m**2
    return atoms.reshape(-1, d), weights.reshape(-1), ggn, scores


@check(
    "eq8",
    section="§2.1",
    statement="Eq 8: the sampled-label vector d_t is unbiased, E[d dᵀ] = G",
    what=r"$d = |B|^{-1/2}\sum_{x\in B}\nabla_\theta\log p_\theta(\hat y|x)$ has $\mathbb E[dd^\top] = G$ "
    r"(exact sum over all batches and labels; the cross terms vanish because scores have mean 0)",
)
def eq8_unbiased(ctx: Context) -> Outcome:
    """Exact expectation of d dᵀ over batches of two and sampled labels."""
    xp = ctx.xp
    model, theta, x_np, labels = _problem(ctx, m=10)
    m = x_np.shape[0]
    atoms, weights, ggn, scores = _eq8_distribution(ctx, model, theta, x_np)
    a = ctx.asarray(atoms)
    second = ctx.to_numpy(xp.matmul(xp.matrix_transpose(a), a * ctx.asarray(weights)[:, None]))
    true = scores[np.arange(m), labels]
    pairs = (true[:, None, :] + true[None, :, :]).reshape(-1, model.dim) / np.sqrt(2)
    emp_second = pairs.T @ pairs / m**2
    p = ctx.to_numpy(ctx.jit(model.probs)(ctx.asarray(theta[None, :]), ctx.asarray(x_np)))[0]
    mean_score = np.einsum("ik,ika->ia", p, scores)
    out = Outcome(_inputs(model, m) + f", |B| = 2 with replacement: {weights.size} (batch, label) atoms")
    out.add(r"$\|\mathbb E[dd^\top] - G\|_{\max}/\|G\|_{\max}$", rel_err(second, ggn), ctx.tol(100), headline=True)
    out.add(
        r"score has mean zero: $\max_i\|\mathbb E_{\hat y}\nabla\log p\|_\infty / \max\|\nabla\log p\|$",
        np.abs(mean_score).max() / np.abs(scores).max(),
        ctx.tol(50),
    )
    out.add(
        r"control: with the true labels, $\|\mathbb E[dd^\top] - G\|_{\max}/\|G\|_{\max}$",
        rel_err(emp_second, ggn),
        1e-2,
        ">=",
    )
    return out


@check(
    "eq7",
    section="§2.1",
    statement="Eq 7: for fixed θ the EMA of d dᵀ converges to G in expectation",
    what=r"Monte Carlo over independent chains: $\mathbb E[G_t] = \alpha^t G_0 + (1-\alpha^t)G$ and "
    r"$\mathbb E\|G_t - G\|_F^2 = \alpha^{2t}\|G_0-G\|_F^2 + \frac{(1-\alpha)(1-\alpha^{2t})}{1+\alpha}V$",
)
def eq7_ema_convergence(ctx: Context) -> Outcome:
    """Compare the mean and mean-square error of the sampled-label EMA with their exact laws."""
    model, theta, x_np, _ = _problem(ctx, m=8)
    atoms, weights, ggn, _ = _eq8_distribution(ctx, model, theta, x_np)
    d = model.dim
    alpha = 0.95
    chains, steps = ctx.size((96, 120), (256, 200))
    checkpoints = [t for t in (1, 5, 20, 50, 100, 200) if t <= steps]
    g0 = np.eye(d)
    # V = E‖d dᵀ − G‖_F² = E‖d‖⁴ − ‖G‖_F² (because E[d dᵀ] = G, checked by `eq8`).
    var = float(weights @ np.sum(atoms**2, axis=1) ** 2 - np.sum(ggn**2))
    rng = ctx.rng
    draws = rng.choice(weights.size, size=(steps, chains), p=weights / weights.sum())
    g = np.broadcast_to(g0, (chains, d, d)).copy()
    out = Outcome(_inputs(model, x_np.shape[0]) + f", |B|=2, α={alpha}, G₀=I, {chains} chains × {steps} steps")
    # Probes of the mean: tr G_t, ⟨G_t, G⟩_F/‖G‖_F and u₁ᵀG_t u₁ (u₁ the top eigenvector of G); each
    # chain gives one sample, so the z-score of the chains' average against E[G_t] is calibrated.
    u1 = np.linalg.eigh(ggn)[1][:, -1]
    unit_g = ggn / np.linalg.norm(ggn)

    def probes(mats: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.trace(mats, axis1=-2, axis2=-1), np.sum(mats * unit_g, axis=(-2, -1)), u1 @ mats @ u1], axis=-1
        )

    worst_mse, worst_mean = 0.0, 0.0
    rows = []
    for t in range(1, steps + 1):
        dt = atoms[draws[t - 1]]
        g = alpha * g + (1 - alpha) * dt[:, :, None] * dt[:, None, :]
        if t in checkpoints:
            err2 = np.sum((g - ggn) ** 2, axis=(1, 2))
            noise = (1 - alpha) ** 2 * (1 - alpha ** (2 * t)) / (1 - alpha**2) * var
            predicted = alpha ** (2 * t) * np.sum((g0 - ggn) ** 2) + noise
            se = err2.std(ddof=1) / np.sqrt(chains)
            worst_mse = max(worst_mse, abs(err2.mean() - predicted) / se)
            samples = probes(g)
            expected = probes(alpha**t * g0 + (1 - alpha**t) * ggn)
            z = np.abs(samples.mean(axis=0) - expected) / (samples.std(axis=0, ddof=1) / np.sqrt(chains))
            worst_mean = max(worst_mean, float(z.max()))
            rows.append((t, np.sqrt(err2.mean()), np.sqrt(predicted), np.sqrt(np.sum((g.mean(0) - ggn) ** 2))))
    out.add(
        r"max over checkpoints: $|\widehat{\mathrm{MSE}}_t - \mathrm{MSE}_t|$ in standard errors",
        worst_mse,
        6.0,
        headline=True,
    )
    out.add(
        r"max over checkpoints and probes ($\operatorname{tr}$, $\langle\cdot,G\rangle$, $u_1^\top\cdot u_1$): "
        r"mean of chains vs $\mathbb E G_t$, in standard errors",
        worst_mean,
        6.0,
    )
    shrink = rows[-1][1] / rows[0][1]
    floor = np.sqrt((1 - alpha) / (1 + alpha) * var)
    out.add(r"error shrinks: $\mathrm{RMSE}_{\text{last}}/\mathrm{RMSE}_1$", shrink, 0.5)
    out.add(r"and settles at the noise floor $\sqrt{(1-\alpha)V/(1+\alpha)}$: ratio", rows[-1][1] / floor, 1.5)
    # The library's dense EMA on the backend reproduces the recurrence.
    chain = atoms[draws[:, 0]]
    got = ctx.to_numpy(ctx.lg.ema_dense(ctx.asarray(chain), decay=alpha, initial=ctx.asarray(g0)))
    ref = g0.copy()
    for v in chain:
        ref = alpha * ref + (1 - alpha) * np.outer(v, v)
    out.add(
        r"`lg.ema_dense` on the backend vs float64 recurrence, rel. max error",
        rel_err(got, ref),
        ctx.tol(20 * np.sqrt(steps)),
    )
    table = ["| t | RMSE (Monte Carlo) | RMSE (exact law) | ‖mean of chains − G‖_F |", "|---|---|---|---|"]
    table += [f"| {t} | {a:.4g} | {b:.4g} | {c:.4g} |" for t, a, b, c in rows]
    out.note(
        "The sampled-label EMA does not converge to $G$ for a fixed decay: its mean does, like "
        "$\\alpha^t$, and its error settles at the noise floor $\\sqrt{(1-\\alpha)V/(1+\\alpha)}$ with "
        "$V = \\mathbb E\\|dd^\\top - G\\|_F^2$ computed exactly from the law of $d$. "
        "“Converges in expectation” (the paper's words) is the first statement.\n\n" + "\n".join(table)
    )
    return out
