"""End to end: the optimisers train the reproduction's models on real data (scikit-learn's digits)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn")


def test_import_lowrank_ggn_without_optax_or_torch():
    """``import lowrank_ggn`` and ``lowrank_ggn.optim`` need neither optax nor torch."""
    code = textwrap.dedent(
        """
        import sys
        for name in ("optax", "torch", "jax"):
            sys.modules[name] = None  # any import of them fails
        import lowrank_ggn, lowrank_ggn.optim
        try:
            import lowrank_ggn.optim.optax
        except ImportError:
            pass
        else:
            raise SystemExit("lowrank_ggn.optim.optax imported without optax")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)  # noqa: S603
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.backend_jax
@pytest.mark.parametrize("family", ["ginger", pytest.param("qng", marks=pytest.mark.slow)])
def test_optax_trains_the_digits_mlp(family):
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    optax = pytest.importorskip("optax")
    from experiments.data import load
    from experiments.models import init_model
    from lowrank_ggn.optim import optax as lgo
    from lowrank_ggn.optim.jax_likelihoods import value_grad_and_curvature

    ds = load("digits")
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    params, apply = init_model("mlp", jax.random.key(0), x.shape[1:], 10)
    tx = lgo.ginger(0.1, rank=4) if family == "ginger" else lgo.qng(0.1, rank=4)
    state = tx.init(params)

    @jax.jit
    def step(params, state, key, idx):
        fn = lambda p: apply(p, x[idx])  # noqa: E731
        loss, grads, curv, _ = value_grad_and_curvature(fn, params, y[idx], key, "categorical")
        updates, state = tx.update(grads, state, params, curvature=curv)
        return optax.apply_updates(params, updates), state, loss

    key = jax.random.key(1)
    rng = np.random.default_rng(0)
    for _ in range(4):  # epochs
        for idx in rng.permutation(len(ds.y_train))[: 16 * 64].reshape(16, 64):
            key, sub = jax.random.split(key)
            params, state, _ = step(params, state, sub, jnp.asarray(idx))
    acc = float(jnp.mean(jnp.argmax(apply(params, jnp.asarray(ds.x_val)), -1) == jnp.asarray(ds.y_val)))
    assert acc > 0.9, acc
    assert all(int(b.num_nonfinite) == 0 for b in state[0].blocks if b is not None)


@pytest.mark.backend_torch
@pytest.mark.parametrize("optimizer", ["ginger", pytest.param("qng", marks=pytest.mark.slow)])
def test_torch_trains_the_digits_mlp(optimizer):
    pytest.importorskip("torch")
    from experiments.torch_train import train

    hist = train("digits", "mlp", optimizer, 0.1, epochs=3, rank=4)
    assert hist["val_acc"][-1] > 0.9, hist


@pytest.mark.slow
@pytest.mark.backend_torch
@pytest.mark.parametrize("optimizer", ["ginger", "qng"])
def test_torch_trains_the_residual_cnn(optimizer):
    pytest.importorskip("torch")
    from experiments.torch_train import train

    hist = train("digits", "cnn", optimizer, 0.1, epochs=8, rank=4)
    assert max(hist["val_acc"]) > 0.9, hist


@pytest.mark.slow
def test_quick_reproduction_writes_every_output(tmp_path):
    pytest.importorskip("optax")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    out = tmp_path / "repro"
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "experiments.reproduce", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("runs.csv", "table1.csv", "sensitivity.csv", "damping.csv", "tuning.csv", "costs.csv", "results.md"):
        assert (out / name).stat().st_size > 0, name
    for name in ("curves.png", "tuning.png", "sensitivity.png"):
        assert (out / name).exists(), name
