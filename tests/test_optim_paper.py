"""The authors' released update (ginger_paper / GingerPaper): the optax chain, a NumPy reference, torch = optax."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402

import lowrank_ggn as lg  # noqa: E402
from lowrank_ggn.optim import optax as lgo  # noqa: E402
from lowrank_ggn.optim import torch as lgt  # noqa: E402

SHAPES = {"b": (3,), "s": (), "w": (4, 3)}  # jax.tree order: b, s, w


def _stream(seed: int, steps: int) -> list[tuple[dict, dict]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        g = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
        d = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
        out.append((g, d))
    return out


def _as_jax(tree: dict) -> dict:
    return {k: jnp.asarray(v, jnp.float64) for k, v in tree.items()}


def _params() -> dict:
    return {k: np.ones(s) for k, s in SHAPES.items()}


def _run_optax(tx: optax.GradientTransformation, stream: list, *, with_curvature: bool = True) -> list[dict]:
    with jax.enable_x64(True):
        params = _as_jax(_params())
        state = tx.init(params)
        out = []
        for g, d in stream:
            kw = {"curvature": _as_jax(d)} if with_curvature else {}
            u, state = tx.update(_as_jax(g), state, params, **kw)
            params = optax.apply_updates(params, u)
            out.append({k: np.asarray(v) for k, v in u.items()})
        return out


def _chain(lr: float, rank: int, decay: float, damping: float, b1: float, clip: float) -> optax.GradientTransformation:
    return optax.chain(
        optax.ema(b1, debias=True),
        lgo.scale_by_ginger(rank=rank, decay=decay, damping=damping),
        optax.clip(clip),
        optax.scale(-lr),
    )


def test_ginger_paper_equals_the_optax_chain_on_random_streams():
    rng = np.random.default_rng(100)
    lr, damping, clip = float(rng.uniform(1e-3, 1)), float(10 ** rng.uniform(-5, -1)), float(rng.uniform(0.1, 2))
    tx = lgo.ginger_paper(lr, rank=2, decay=0.9, damping=damping, clip=clip)
    chain = _chain(lr, 2, 0.9, damping, 0.9, clip)
    for seed in range(3):  # the same two transformations (compiled once) on three streams
        stream = _stream(seed, 12)
        got, want = _run_optax(tx, stream), _run_optax(chain, stream)
        for a, b in zip(got, want, strict=True):
            for k in SHAPES:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15)
        assert any(np.max(np.abs(u["w"])) == pytest.approx(lr * clip) for u in got)  # the clip was active


def test_ginger_paper_defaults_are_the_authors():
    stream = _stream(3, 5)
    got = _run_optax(lgo.ginger_paper(), stream)
    want = _run_optax(_chain(2e-4, 4, 0.99, 1e-5, 0.9, 1.0), stream)
    for a, b in zip(got, want, strict=True):
        for k in SHAPES:
            np.testing.assert_array_equal(a[k], b[k])


def test_ginger_paper_folds_the_gradient_not_the_moment_without_curvature():
    stream = _stream(4, 6)
    got = _run_optax(lgo.ginger_paper(0.1, rank=2, damping=0.1), stream, with_curvature=False)
    want = _run_optax(_chain(0.1, 2, 0.99, 0.1, 0.9, 1.0), [(g, g) for g, _ in stream])
    for a, b in zip(got, want, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15)


def test_lowrank_paper_is_generic_over_the_protocol():
    stream = _stream(5, 6)
    got = _run_optax(lgo.lowrank_paper(lg.qng(rank=2, decay=0.9), 0.1, damping=None, clip=0.5), stream)
    chain = optax.chain(
        optax.ema(0.9, debias=True), lgo.scale_by_qng(rank=2, decay=0.9), optax.clip(0.5), optax.scale(-0.1)
    )
    want = _run_optax(chain, stream)
    for a, b in zip(got, want, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-15)


def _numpy_reference(stream: list, *, lr: float, decay: float, damping: float, b1: float, clip: float) -> list[dict]:
    """Dense float64: M_t = α M + (1−α) d dᵀ per leaf (exact while t ≤ rank), u = −η clip((γI + M)⁻¹ m̂)."""
    m = {k: np.zeros(int(np.prod(s))) for k, s in SHAPES.items()}
    M = {k: np.zeros((v.size, v.size)) for k, v in m.items()}
    out = []
    for t, (g, d) in enumerate(stream, start=1):
        u = {}
        for k, s in SHAPES.items():
            gk, dk = np.ravel(g[k]), np.ravel(d[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            mhat = m[k] / (1 - b1**t)
            if gk.size == 1:  # a scalar block keeps no curvature: γ⁻¹
                y = mhat / damping
            else:
                M[k] = decay * M[k] + (1 - decay) * np.outer(dk, dk)
                y = np.linalg.solve(damping * np.eye(gk.size) + M[k], mhat)
            u[k] = np.reshape(-lr * np.clip(y, -clip, clip), s)
        out.append(u)
    return out


def _run_torch(opt_factory, stream: list, *, with_curvature: bool = True) -> list[dict]:
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in _params().items()}
    names = list(SHAPES)
    opt = opt_factory([params[k] for k in names])
    out = []
    for g, d in stream:
        before = {k: params[k].detach().clone() for k in names}
        for k in names:
            params[k].grad = torch.tensor(g[k], dtype=torch.float64)
        grads = {k: params[k].grad for k in names}
        curv = [torch.tensor(d[k], dtype=torch.float64) for k in names] if with_curvature else None
        opt.step(curvature=curv)
        for k in names:
            assert params[k].grad is grads[k]  # the gradients are restored
            np.testing.assert_array_equal(params[k].grad.numpy(), g[k])
        out.append({k: (params[k].detach() - before[k]).numpy() for k in names})
    return out


def test_numpy_reference_optax_and_torch_agree():
    # 3 steps at rank 3: the rank-τ EMA is exact, so the dense reference applies.
    kw = {"lr": 0.3, "decay": 0.9, "damping": 0.05, "b1": 0.9, "clip": 0.5}
    stream = _stream(6, 3)
    want = _numpy_reference(stream, **kw)
    jax_out = _run_optax(
        lgo.ginger_paper(kw["lr"], rank=3, decay=kw["decay"], damping=kw["damping"], clip=kw["clip"]), stream
    )
    torch_out = _run_torch(
        lambda p: lgt.GingerPaper(
            p, lr=kw["lr"], rank=3, decay=kw["decay"], damping=kw["damping"], clip=kw["clip"], state_dtype=torch.float64
        ),
        stream,
    )
    for w, a, b in zip(want, jax_out, torch_out, strict=True):
        for k in SHAPES:
            # torch's update is θ_new − θ (one rounding of θ + u): compare at the parameters' scale
            np.testing.assert_allclose(a[k], w[k], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(b[k], w[k], rtol=1e-10, atol=1e-13)
    assert any(np.max(np.abs(u["w"])) == pytest.approx(kw["lr"] * kw["clip"]) for u in want)


def test_torch_equals_optax_on_a_long_stream_with_truncation():
    stream = _stream(7, 15)
    jax_out = _run_optax(lgo.ginger_paper(0.05, rank=2, damping=1e-3), stream, with_curvature=False)
    torch_out = _run_torch(
        lambda p: lgt.GingerPaper(p, lr=0.05, rank=2, damping=1e-3, state_dtype=torch.float64),
        stream,
        with_curvature=False,
    )
    for a, b in zip(jax_out, torch_out, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"clip": 0.0}, "clip"),
        ({"clip": -1.0}, "clip"),
        ({"b1": 1.0}, "b1"),
        ({"learning_rate": -1.0}, "learning_rate"),
    ],
)
def test_bad_options_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lgo.ginger_paper(**kwargs)
    torch_kwargs = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match="lr" if name == "learning_rate" else name):
        lgt.GingerPaper([torch.zeros(3, requires_grad=True)], **torch_kwargs)


def test_peer_soap_runs_in_the_peer_harness():
    pytest.importorskip("heavyball")
    import dataclasses

    from experiments import ablations, peers

    task = dataclasses.replace(ablations.TASKS["ae"], steps=peers.EVAL_EVERY)
    res = peers._torch_runs(ablations.load_task("ae"), task, "SOAP", (1e-3,), [0, 1])
    assert res["train_curve"].shape == (1, 2, 1)
    assert np.all(np.isfinite(res["train_loss"]))
    assert res["ratio"] >= 1.0


def test_steps_to_target():
    from experiments import peers

    curve = np.array([[3.0, 2.0, 1.0], [3.0, 3.0, 3.0]])
    got = peers._to_target(curve, 2.0)
    assert got[0] == 2 * peers.EVAL_EVERY
    assert np.isnan(got[1])
