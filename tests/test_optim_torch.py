"""The torch.optim front-end: dense references, options, groups, state_dict round trip, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests._optim_reference import DenseGinger, DenseQNG

torch = pytest.importorskip("torch")
lgt = pytest.importorskip("lowrank_ggn.optim.torch")

pytestmark = pytest.mark.backend_torch


def _t(a, dtype=torch.float64):
    return torch.tensor(np.asarray(a), dtype=dtype)


def _params(rng, dtype=torch.float64):
    return [
        torch.nn.Parameter(_t(rng.standard_normal((3, 4)), dtype)),
        torch.nn.Parameter(_t(rng.standard_normal(5), dtype)),
    ]


def _set_grads(params, rng, scale=1.0):
    grads = [_t(scale * rng.standard_normal(tuple(p.shape)), p.dtype) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    return grads


def _flat(ts):
    return np.concatenate([t.detach().numpy().astype(np.float64).ravel() for t in ts])


def _close(a, b, tol=1e-10):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(b)))))


# ---------------------------------------------------------------------------------------------
# dense references


@pytest.mark.parametrize("blocks", ["param", "group"])
def test_ginger_step_equals_dense_solve(blocks):
    rng = np.random.default_rng(0)
    params = _params(rng)
    lr, gamma, alpha, rank = 0.3, 0.05, 0.8, 2
    opt = lgt.Ginger(params, lr=lr, rank=rank, decay=alpha, damping=gamma, momentum=0.0, blocks=blocks)
    groups = [[0], [1]] if blocks == "param" else [[0, 1]]
    dense = [DenseGinger(sum(params[i].numel() for i in idx), rank) for idx in groups]
    for _ in range(6):
        before = [p.detach().clone() for p in params]
        g = _set_grads(params, rng)
        d = [_t(2 * rng.standard_normal(tuple(p.shape))) for p in params]
        opt.step(curvature=d)
        for idx, ref in zip(groups, dense, strict=True):
            ref.update(_flat([d[i] for i in idx]), alpha)
            step = _flat([params[i] for i in idx]) - _flat([before[i] for i in idx])
            _close(step, -lr * ref.solve(_flat([g[i] for i in idx]), gamma))


@pytest.mark.parametrize("blocks", ["param", "group"])
def test_qng_step_equals_dense_solve(blocks):
    rng = np.random.default_rng(1)
    params = _params(rng)
    lr, alpha, rank = 0.2, 0.7, 2
    opt = lgt.QNG(params, lr=lr, rank=rank, decay=alpha, momentum=0.0, blocks=blocks)
    groups = [[0], [1]] if blocks == "param" else [[0, 1]]
    dense = [DenseQNG(sum(params[i].numel() for i in idx), rank) for idx in groups]
    for _ in range(5):
        before = [p.detach().clone() for p in params]
        g = _set_grads(params, rng)
        d = [_t(rng.standard_normal(tuple(p.shape))) for p in params]
        opt.step(curvature=d)
        for idx, ref in zip(groups, dense, strict=True):
            ref.update(_flat([d[i] for i in idx]), alpha)
            step = _flat([params[i] for i in idx]) - _flat([before[i] for i in idx])
            _close(step, -lr * ref.solve(_flat([g[i] for i in idx])), 1e-9)


def test_torch_and_optax_front_ends_agree():
    """Same gradients, same options: the torch and optax optimisers take the same steps."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    lgo = pytest.importorskip("lowrank_ggn.optim.optax")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(2)
    params = _params(rng)
    jparams = [jnp.asarray(p.detach().numpy()) for p in params]
    kw = {"rank": 2, "decay": 0.9, "momentum": 0.8, "weight_decay": 0.01}
    for opt, tx in (
        (lgt.Ginger(params, lr=0.1, damping=0.2, **kw), lgo.ginger(0.1, damping=0.2, **kw)),
        (lgt.QNG(params, lr=0.1, **kw), lgo.qng(0.1, **kw)),
    ):
        state = tx.init(jparams)
        for _ in range(4):
            g = _set_grads(params, rng)
            d = [_t(rng.standard_normal(tuple(p.shape))) for p in params]
            opt.step(curvature=d)
            u, state = tx.update(
                [jnp.asarray(x.numpy()) for x in g], state, jparams, curvature=[jnp.asarray(x.numpy()) for x in d]
            )
            jparams = [a + b for a, b in zip(jparams, u, strict=True)]
            _close(_flat(params), np.concatenate([np.asarray(x).ravel() for x in jparams]), 1e-9)


# ---------------------------------------------------------------------------------------------
# curvature routing and options


def test_curvature_as_sequence_mapping_or_absent():
    rng = np.random.default_rng(3)
    base = _params(rng)
    grads = [_t(rng.standard_normal(tuple(p.shape))) for p in base]
    curv = [_t(rng.standard_normal(tuple(p.shape))) for p in base]
    results = []
    for mode in ("sequence", "mapping", "grad", "none"):
        params = [torch.nn.Parameter(p.detach().clone()) for p in base]
        opt = lgt.Ginger(params, lr=0.1, rank=2, damping=0.5)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        if mode == "sequence":
            opt.step(curvature=curv)
        elif mode == "mapping":
            opt.step(curvature=dict(zip(params, curv, strict=True)))
        elif mode == "grad":
            opt.step(curvature=grads)
        else:
            opt.step()
        results.append(_flat(params))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[2], results[3])  # no curvature: the gradient (empirical Fisher)
    assert not np.array_equal(results[0], results[2])


def test_update_every_damping_schedule_and_group_damping_change():
    rng = np.random.default_rng(4)
    p = torch.nn.Parameter(_t(rng.standard_normal(6)))
    opt = lgt.Ginger([p], lr=1.0, rank=2, decay=0.9, damping=lambda t: 0.5**t, momentum=0.0, update_every=3)
    ref = DenseGinger(6, 2)
    for t in range(7):
        before = p.detach().clone()
        (g,) = _set_grads([p], rng)
        d = _t(rng.standard_normal(6))
        opt.step(curvature=[d])
        if t % 3 == 0:
            ref.update(d.numpy(), 0.9)
        _close(_flat([p]) - before.numpy(), -ref.solve(g.numpy(), 0.5**t))
    ((_, st),) = opt.block_states()
    assert int(st.step) == 3
    opt.param_groups[0]["damping"] = 2.0  # γ is not in the state: it can change at any step
    before = p.detach().clone()
    (g,) = _set_grads([p], rng)
    opt.step(curvature=[torch.zeros(6, dtype=torch.float64)])
    _close(_flat([p]) - before.numpy(), -ref.solve(g.numpy(), 2.0))


def test_momentum_nesterov_weight_decay_and_lr_scheduler():
    rng = np.random.default_rng(5)
    p = torch.nn.Parameter(_t(rng.standard_normal(5)))
    mu, wd = 0.9, 0.1
    opt = lgt.QNG([p], lr=0.5, rank=2, decay=0.9, momentum=mu, nesterov=True, weight_decay=wd)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    ref, m = DenseQNG(5, 2), np.zeros(5)
    for t in range(5):
        lr = 0.5 * 0.1 ** (t // 2)
        theta = p.detach().numpy().copy()
        (g,) = _set_grads([p], rng)
        d = _t(rng.standard_normal(5))
        opt.step(curvature=[d])
        sched.step()
        ref.update(d.numpy(), 0.9)
        u = ref.solve(g.numpy())
        m = mu * m + u
        expected = theta * (1 - lr * wd) - lr * (u + mu * m)
        _close(_flat([p]), expected, 1e-9)


def test_parameter_groups_with_their_own_options():
    rng = np.random.default_rng(6)
    a, b, c = (torch.nn.Parameter(_t(rng.standard_normal(n))) for n in (6, 4, 3))
    opt = lgt.Ginger(
        [{"params": [a, b], "blocks": "group", "rank": 3}, {"params": [c], "lr": 0.0, "rank": 1}],
        lr=0.1,
        damping=0.3,
    )
    _set_grads([a, b, c], rng)
    c0 = c.detach().clone()
    opt.step()
    shapes = [(len(ps), tuple(st.basis.shape)) for ps, st in opt.block_states()]
    assert shapes == [(2, (10, 3)), (1, (3, 1))]
    torch.testing.assert_close(c.detach(), c0)  # lr = 0 in that group


@pytest.mark.parametrize("state_dtype", [None, torch.float64])
def test_state_dtype_and_float32_parameters(state_dtype):
    rng = np.random.default_rng(7)
    params = _params(rng, torch.float32)
    opt = lgt.Ginger(params, lr=0.01, rank=2, state_dtype=state_dtype)
    _set_grads(params, rng)
    opt.step()
    for _, st in opt.block_states():
        assert st.basis.dtype == (torch.float32 if state_dtype is None else torch.float64)
    assert all(p.dtype == torch.float32 for p in params)


def test_scalar_parameters_and_missing_gradients():
    s = torch.nn.Parameter(torch.tensor(2.0, dtype=torch.float64))
    v = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = lgt.Ginger([s, v], lr=1.0, rank=4, damping=0.5, momentum=0.0)
    s.grad = torch.tensor(1.0, dtype=torch.float64)
    opt.step()  # v has no gradient: untouched, no state
    assert s.item() == pytest.approx(2.0 - 1.0 / 0.5)
    torch.testing.assert_close(v.detach(), torch.ones(4, dtype=torch.float64))
    assert opt.block_states() == []
    q = lgt.QNG([s], lr=1.0, momentum=0.0)
    s.grad = torch.tensor(1.0, dtype=torch.float64)
    q.step()
    assert s.item() == pytest.approx(2.0 - 2.0 - 1.0)


def test_nonfinite_curvature_leaves_the_state_unchanged_and_is_counted():
    rng = np.random.default_rng(8)
    params = _params(rng)
    for opt in (lgt.Ginger(params, lr=0.01, rank=2), lgt.QNG(params, lr=0.01, rank=2)):
        _set_grads(params, rng)
        opt.step()
        before = {id(ps[0]): {k: v.clone() for k, v in st._asdict().items()} for ps, st in opt.block_states()}
        _set_grads(params, rng)
        bad = [torch.full_like(params[0], float("nan")), torch.ones_like(params[1])]
        opt.step(curvature=bad)
        (p0, s0), (_, s1) = opt.block_states()
        assert int(s0.num_nonfinite) == 1
        assert int(s1.num_nonfinite) == 0
        for k, v in s0._asdict().items():
            if k != "num_nonfinite":
                torch.testing.assert_close(v, before[id(p0[0])][k], rtol=0, atol=0)
        assert all(torch.isfinite(p).all() for p in params)


# ---------------------------------------------------------------------------------------------
# state_dict round trip


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: lgt.Ginger(
            ps, lr=0.05, rank=3, damping=0.1, weight_decay=1e-3, state_dtype=torch.float64, reorthonormalize_every=3
        ),
        lambda ps: lgt.QNG(
            [{"params": ps[:1], "blocks": "group"}, {"params": ps[1:], "lr": 0.01}], lr=0.05, rank=2, update_every=2
        ),
    ],
)
def test_state_dict_round_trip_gives_the_same_trajectory(make):
    rng = np.random.default_rng(9)
    init = _params(rng, torch.float32)
    grads = [[_t(rng.standard_normal(tuple(p.shape)), torch.float32) for p in init] for _ in range(10)]
    curvs = [[_t(rng.standard_normal(tuple(p.shape)), torch.float32) for p in init] for _ in range(10)]

    def fresh():
        ps = [torch.nn.Parameter(p.detach().clone()) for p in init]
        return ps, make(ps)

    def run(ps, opt, steps):
        for t in steps:
            for p, g in zip(ps, grads[t], strict=True):
                p.grad = g.clone()
            opt.step(curvature=curvs[t])

    full_ps, full_opt = fresh()
    run(full_ps, full_opt, range(10))
    half_ps, half_opt = fresh()
    run(half_ps, half_opt, range(6))
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in half_ps], "opt": half_opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    new_ps, new_opt = fresh()
    with torch.no_grad():
        for p, v in zip(new_ps, ckpt["params"], strict=True):
            p.copy_(v)
    new_opt.load_state_dict(ckpt["opt"])
    for (_, a), (_, b) in zip(new_opt.block_states(), half_opt.block_states(), strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype
            torch.testing.assert_close(x, y, rtol=0, atol=0)
    run(new_ps, new_opt, range(6, 10))
    for a, b in zip(full_ps, new_ps, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"lr": -1.0}, ValueError, "lr"),
        ({"rank": 0}, ValueError, "rank"),
        ({"rank": 1.5}, TypeError, "rank"),
        ({"decay": 1.0}, ValueError, "decay"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay"),
        ({"update_every": 0}, ValueError, "update_every"),
        ({"blocks": "layer"}, ValueError, "blocks"),
        ({"state_dtype": torch.float16}, TypeError, "state_dtype"),
    ],
)
def test_bad_options(kwargs, exc, match):
    p = [torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(exc, match=match):
        lgt.Ginger(p, **kwargs)
    with pytest.raises(exc, match=match):
        lgt.QNG(p, **kwargs)


@pytest.mark.parametrize("damping", [0.0, -1.0, float("nan")])
def test_bad_damping(damping):
    with pytest.raises(ValueError, match="damping"):
        lgt.Ginger([torch.nn.Parameter(torch.ones(3))], damping=damping)
    opt = lgt.Ginger([torch.nn.Parameter(torch.ones(3))])
    with pytest.raises(ValueError, match="damping"):
        opt.add_param_group({"params": [torch.ones(2)], "damping": damping})
    assert len(opt.param_groups) == 1  # the invalid group was not added


def test_bad_curvature():
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    opt = lgt.Ginger(params, rank=1)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="curvature"):
        opt.step(curvature=[torch.ones(3)])
    with pytest.raises(ValueError, match="curvature"):
        opt.step(curvature=[torch.ones(3), torch.ones(3)])
    with pytest.raises(ValueError, match="curvature"):
        opt.step(curvature={torch.nn.Parameter(torch.ones(3)): torch.ones(3)})
    with pytest.raises(TypeError, match="curvature"):
        opt.step(curvature=torch.ones(5))
    with pytest.raises(TypeError, match="curvature"):
        opt.step(curvature=[np.ones(3), torch.ones(2)])
    with pytest.raises(TypeError, match="floating"):
        lgt.QNG([torch.ones(3, dtype=torch.int64)])
