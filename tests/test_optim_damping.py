"""Damping policies (lowrank_ggn.optim.damping) on the optax and torch front-ends."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402

import lowrank_ggn as lg  # noqa: E402
from lowrank_ggn.optim import damping as dp  # noqa: E402
from lowrank_ggn.optim import optax as lgo  # noqa: E402
from lowrank_ggn.optim import torch as lgt  # noqa: E402

LM = dp.levenberg_marquardt(1.0, factor=0.5, min_damping=0.1, max_damping=4.0)


@pytest.mark.parametrize(
    ("ratio", "want"), [(0.9, 0.5), (0.5, 1.0), (0.1, 2.0), (-3.0, 2.0), (math.nan, 2.0), (0.25, 1.0), (0.75, 1.0)]
)
def test_levenberg_marquardt_direction(ratio, want):
    # good step (ρ > 3/4): γ shrinks; poor (ρ < 1/4) or NaN: γ grows; in between: unchanged
    assert LM.adapt(1.0, ratio) == pytest.approx(want)
    assert float(LM.adapt(jnp.float32(1.0), jnp.float32(ratio))) == pytest.approx(want)
    assert float(LM.adapt(torch.tensor(1.0), torch.tensor(ratio))) == pytest.approx(want)
    assert LM.adapt(1.0, None) == 1.0


def test_levenberg_marquardt_bounds():
    assert LM.adapt(0.15, 0.9) == pytest.approx(0.1)
    assert LM.adapt(3.0, 0.0) == pytest.approx(4.0)
    assert float(jax.jit(LM.adapt)(jnp.float32(3.0), jnp.float32(0.0))) == pytest.approx(4.0)


def test_reduction_ratio_and_quadratic_change():
    # loss 0.5 x² at x = 1, step δ = −1: q = g δ + ½ δ C δ = −1 + 0.5 = −0.5, actual = 0 − 0.5
    q = dp.quadratic_change(-1.0, 1.0, 1.0, 0.0)
    assert q == -0.5
    assert dp.reduction_ratio(0.5, 0.0, q) == 1.0
    assert dp.quadratic_change(-1.0, 1.0, 1.0, 2.0) == 0.5


@pytest.mark.parametrize(
    ("factory", "kwargs", "name"),
    [
        (dp.levenberg_marquardt, {"factor": 1.5}, "factor"),
        (dp.levenberg_marquardt, {"initial": -1.0}, "initial"),
        (dp.levenberg_marquardt, {"lower": 0.8, "upper": 0.5}, "lower"),
        (dp.levenberg_marquardt, {"initial": 10.0, "max_damping": 1.0}, "initial"),
        (dp.fixed, {"damping": 0.0}, "damping"),
        (dp.escaped, {"damping": 1.0, "scale": -1.0}, "scale"),
    ],
)
def test_bad_options_name_the_argument(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


PARAMS = {"w": np.linspace(-1, 1, 12).reshape(4, 3), "b": np.zeros(3), "s": np.zeros(())}


def _grads(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(np.shape(v)) for k, v in PARAMS.items()}


def _optax_updates(tx, steps: int, **extra) -> tuple[list, Any]:
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v) for k, v in PARAMS.items()}
        state = tx.init(params)
        out = []
        for t in range(steps):
            g = {k: jnp.asarray(v) for k, v in _grads(t).items()}
            u, state = tx.update(g, state, params, **extra)
            out.append({k: np.asarray(v) for k, v in u.items()})
        return out, state


def test_optax_fixed_and_scheduled_policies_equal_the_number_and_the_schedule():
    sched = optax.exponential_decay(1.0, 1, 0.5)
    pairs = [(dp.fixed(0.3), 0.3), (dp.scheduled(sched), sched)]
    for policy, plain in pairs:
        a, _ = _optax_updates(lgo.scale_by_ginger(rank=2, damping=policy), 4)
        b, _ = _optax_updates(lgo.scale_by_ginger(rank=2, damping=plain), 4)
        for x, y in zip(a, b, strict=True):
            for k in PARAMS:
                np.testing.assert_allclose(x[k], y[k], rtol=1e-12)


def test_optax_levenberg_marquardt_adapts_and_preconditions_with_the_adapted_damping():
    tx = lgo.scale_by_ginger(rank=2, damping=LM)
    good, state = _optax_updates(tx, 3, reduction_ratio=0.9)
    assert float(state.damping) == pytest.approx(0.125)  # 1 → 0.5 → 0.25 → 0.125
    # step by step: γ used at step t is the γ adapted with the ratio passed at step t
    _, state = _optax_updates(tx, 1, reduction_ratio=0.9)
    assert float(state.damping) == pytest.approx(0.5)
    poor, state = _optax_updates(tx, 2, reduction_ratio=0.0)
    assert float(state.damping) == pytest.approx(4.0)
    fixed, _ = _optax_updates(lgo.scale_by_ginger(rank=2, damping=0.5), 1)
    np.testing.assert_allclose(good[0]["w"], fixed[0]["w"], rtol=1e-12)
    fixed2, _ = _optax_updates(lgo.scale_by_ginger(rank=2, damping=2.0), 1)
    np.testing.assert_allclose(poor[0]["w"], fixed2[0]["w"], rtol=1e-12)
    np.testing.assert_allclose(poor[0]["s"], _grads(0)["s"] / 2.0, rtol=1e-12)  # a scalar block: γ⁻¹g


def test_torch_policies():
    def run(damping, ratio=None, steps=3):
        p = torch.tensor(PARAMS["w"], requires_grad=True)
        opt = lgt.Ginger([p], lr=1.0, rank=2, damping=damping, momentum=0.0, state_dtype=torch.float64)
        out = []
        for t in range(steps):
            if ratio is not None:
                opt.adapt_damping(ratio)
            before = p.detach().clone()
            p.grad = torch.tensor(_grads(t)["w"])
            opt.step()
            out.append((p.detach() - before).numpy())
        return out, opt

    for policy, plain in [(dp.fixed(0.3), 0.3), (dp.scheduled(lambda c: 1.0 / (1 + c)), lambda c: 1.0 / (1 + c))]:
        for a, b in zip(run(policy)[0], run(plain)[0], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    out, opt = run(LM, ratio=0.9, steps=1)
    assert opt.param_groups[0]["damping_state"] == pytest.approx(0.5)
    np.testing.assert_allclose(out[0], run(0.5, steps=1)[0][0], rtol=1e-12)
    _, opt = run(LM, ratio=0.0, steps=2)
    assert opt.param_groups[0]["damping_state"] == pytest.approx(4.0)
    state = opt.state_dict()
    assert state["param_groups"][0]["damping_state"] == pytest.approx(4.0)


# -- the escaped-mass policy, with an approximation whose state carries `escaped` ------------------


class EscState(NamedTuple):
    inner: Any
    escaped: Any


@dataclasses.dataclass(frozen=True)
class EscapingGinger:
    """lg.ginger whose state also counts an `escaped` mass of 0.25 per fold (a test double)."""

    inner: Any
    name: str = "escaping_ginger"
    needs_damping: bool = True
    shardable: bool = False
    state_type: type = EscState

    @property
    def rank(self):
        return self.inner.rank

    @property
    def decay(self):
        return self.inner.decay

    def with_rank(self, rank):
        return dataclasses.replace(self, inner=self.inner.with_rank(rank))

    def init(self, dim, *, xp=None, dtype=None, device=None):
        st = self.inner.init(dim, xp=xp, dtype=dtype, device=device)
        return EscState(st, xp.zeros((), dtype=dtype) if xp is not torch else torch.zeros((), dtype=dtype))

    def fold(self, xp, state, d, **kw):
        return EscState(self.inner.fold(xp, state.inner, d, **kw), state.escaped + 0.25)

    def fold_precondition(self, xp, state, d, g, *, damping, **kw):  # pragma: no cover - the policy folds first
        raise AssertionError

    def solve(self, xp, state, g, *, damping, **kw):
        return self.inner.solve(xp, state.inner, g, damping=damping, **kw)


def test_escaped_policy_adds_the_escaped_mass():
    assert dp.escaped(1.0, scale=2.0).block_damping(1.0, EscState(None, 0.3)) == pytest.approx(1.6)
    approx = EscapingGinger(lg.ginger(rank=2, decay=0.9))
    out, _ = _optax_updates(lgo.scale_by_lowrank(approx, damping=dp.escaped(1.0)), 3)
    ref_tx = [lgo.scale_by_lowrank(lg.ginger(rank=2, decay=0.9), damping=1.0 + 0.25 * t) for t in (1, 2, 3)]
    for t, (u, tx) in enumerate(zip(out, ref_tx, strict=True)):
        want, _ = _optax_updates(tx, t + 1)  # the plain Ginger state after t + 1 folds, damped with γ + ε_t
        np.testing.assert_allclose(u["w"], want[t]["w"], rtol=1e-12)
        np.testing.assert_allclose(u["s"], _grads(t)["s"] / 1.0, rtol=1e-12)  # scalar blocks: no state, base γ
    # torch: the same policy on the same test double
    p = torch.tensor(PARAMS["w"], requires_grad=True)
    opt = lgt.LowRank([p], approx, lr=1.0, damping=dp.escaped(1.0), momentum=0.0, state_dtype=torch.float64)
    for t in range(3):
        before = p.detach().clone()
        p.grad = torch.tensor(_grads(t)["w"])
        opt.step()
        np.testing.assert_allclose(-(p.detach() - before).numpy(), out[t]["w"], rtol=1e-10)


def test_escaped_policy_rejects_states_without_escaped():
    # The Ginger states carry `escaped`; the diagonal approximation's states do not.
    lgo.ginger(0.1, damping=dp.escaped(1.0))
    with pytest.raises(ValueError, match="escaped"):
        lgo.scale_by_lowrank(lg.diagonal(decay=0.9), damping=dp.escaped(1.0))
    with pytest.raises(ValueError, match="escaped"):
        lgt.LowRank([torch.zeros(3, requires_grad=True)], lg.diagonal(decay=0.9), damping=dp.escaped(1.0))
    with pytest.raises(ValueError, match="escaped"):
        dp.escaped(1.0).block_damping(1.0, lg.diagonal(decay=0.9).init(4))


def test_policy_on_qng_is_rejected():
    with pytest.raises(ValueError, match="damping must be None"):
        lgo.scale_by_lowrank(lg.qng(rank=2, decay=0.9), damping=dp.fixed(1.0))
