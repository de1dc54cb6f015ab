"""Training engine of the reproduction: optimisers, a jitted training run, a step benchmark.

A *run* trains one model on one dataset with one optimiser for a fixed number
of epochs, without learning-rate schedule or weight decay (as in the paper's
§4.1), and records after every epoch the accuracy and mean loss on the tuning
and validation splits, and the minimum training loss over sampled batches.
:func:`train_many` runs several learning rates / seeds / decays at once with
``jax.vmap`` (one compilation, one process).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.data import Dataset
from experiments.models import init_model
from lowrank_ggn.optim import optax as lgo
from lowrank_ggn.optim._options import DEFAULT_DAMPING
from lowrank_ggn.optim.jax_likelihoods import negative_log_likelihood, value_grad_and_curvature

__all__ = ["FAMILIES", "OptSpec", "StepCost", "measure_step_costs", "train_many"]

FAMILIES = ("momentum", "adam", "qng", "ginger")
FIRST_MOMENT = 0.9  # the paper's first-moment coefficient, for every optimiser
SECOND_MOMENT = 0.99  # the paper's second-moment coefficient: Adam's b2, and the curvature decay α


@dataclass(frozen=True)
class OptSpec:
    """One optimiser configuration (the learning rate and decay are run arguments)."""

    family: str
    rank: int | None = None
    damping: float = DEFAULT_DAMPING
    blocks: str = "leaf"

    @property
    def name(self) -> str:
        """Label as in the paper's tables, e.g. ``Ginger (τ=4)``."""
        base = {"momentum": "Momentum", "adam": "Adam", "qng": "QNG", "ginger": "Ginger"}[self.family]
        return base if self.rank is None else f"{base} (τ={self.rank})"

    @property
    def needs_curvature(self) -> bool:
        """Whether the optimiser consumes the sampled-label gradient of Eq 8."""
        return self.family in ("qng", "ginger")

    def make(self, learning_rate: Any, decay: Any = SECOND_MOMENT) -> optax.GradientTransformation:
        """Build the optax optimiser (``learning_rate`` and ``decay`` may be traced)."""
        if self.family == "momentum":
            return optax.sgd(learning_rate, momentum=FIRST_MOMENT)
        if self.family == "adam":
            return optax.adam(learning_rate, b1=FIRST_MOMENT, b2=SECOND_MOMENT)
        if self.family == "qng":
            return lgo.qng(learning_rate, rank=self.rank, decay=decay, momentum=FIRST_MOMENT, blocks=self.blocks)
        if self.family == "ginger":
            return lgo.ginger(
                learning_rate,
                rank=self.rank,
                decay=decay,
                damping=self.damping,
                momentum=FIRST_MOMENT,
                blocks=self.blocks,
                # Runs are vmapped; on jaxlib 0.10 CPU, two batched QRs (the re-orthonormalisation,
                # a lax.cond that vmap turns into a select) can deadlock XLA's thread pool. The runs
                # are ≤ 2000 updates, where the float32 drift of UᵀU − I stays below 1e-5 without it.
                reorthonormalize_every=None,
            )
        msg = f"unknown optimiser family {self.family!r}"
        raise ValueError(msg)


def _targets(ds: Dataset, y: Any) -> Any:
    return y[:, None].astype(jnp.float32) if ds.likelihood == "bernoulli" else y


def _accuracy(ds: Dataset, outputs: Any, y: Any) -> Any:
    pred = (outputs[:, 0] > 0).astype(y.dtype) if ds.likelihood == "bernoulli" else jnp.argmax(outputs, -1)
    return jnp.mean((pred == y).astype(jnp.float32))


def _make_step(ds: Dataset, apply: Any, spec: OptSpec, tx: optax.GradientTransformation) -> Any:
    """One training step; the first-order baselines skip the sampled-label vector-Jacobian product."""

    def curvature_step(params: Any, opt_state: Any, key: jax.Array, xb: Any, yb: Any) -> tuple[Any, Any, Any]:
        fn = lambda p: apply(p, xb)  # noqa: E731
        loss, grads, curv, _ = value_grad_and_curvature(fn, params, _targets(ds, yb), key, ds.likelihood)
        updates, opt_state = tx.update(grads, opt_state, params, curvature=curv)
        return optax.apply_updates(params, updates), opt_state, loss

    def first_order_step(params: Any, opt_state: Any, key: jax.Array, xb: Any, yb: Any) -> tuple[Any, Any, Any]:
        del key

        def loss_fn(p: Any) -> Any:
            return jnp.mean(negative_log_likelihood(apply(p, xb), _targets(ds, yb), ds.likelihood))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return curvature_step if spec.needs_curvature else first_order_step


def _evaluate(ds: Dataset, apply: Any, params: Any, x: Any, y: Any) -> tuple[Any, Any]:
    outputs = apply(params, x)
    loss = jnp.mean(negative_log_likelihood(outputs, _targets(ds, y), ds.likelihood))
    ok = jnp.isfinite(loss)
    return jnp.where(ok, _accuracy(ds, outputs, y), 0.0), jnp.where(ok, loss, jnp.inf)


def train_many(
    ds: Dataset,
    model: str,
    spec: OptSpec,
    learning_rates: np.ndarray,
    seeds: np.ndarray,
    *,
    decays: np.ndarray | None = None,
    epochs: int,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Train ``len(learning_rates)`` runs at once (vmapped); one seed and decay per run.

    Returns
    -------
    dict
        ``tune_acc``, ``tune_loss``, ``val_acc``, ``val_loss`` of shape
        (runs, epochs); ``min_train_loss`` of shape (runs,). A diverged run
        has accuracy 0 and loss ``inf`` from the epoch it diverged.
    """
    x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_tune, y_tune = jnp.asarray(ds.x_tune), jnp.asarray(ds.y_tune)
    x_val, y_val = jnp.asarray(ds.x_val), jnp.asarray(ds.y_val)
    if ds.image_shape is not None and model == "cnn":
        shape = (-1, *ds.image_shape)
        x_train, x_tune, x_val = (jnp.reshape(a, shape) for a in (x_train, x_tune, x_val))
    n_train = x_train.shape[0]
    steps = n_train // batch_size
    input_shape = x_train.shape[1:]
    if decays is None:
        decays = np.full(len(learning_rates), SECOND_MOMENT)

    def run(lr: Any, seed: Any, decay: Any) -> dict[str, Any]:
        key = jax.random.key(seed)
        key, init_key = jax.random.split(key)
        params, apply = init_model(model, init_key, input_shape, ds.num_outputs)
        tx = spec.make(lr, decay)
        step = _make_step(ds, apply, spec, tx)
        opt_state = tx.init(params)

        def epoch(carry: Any, _: Any) -> tuple[Any, Any]:
            params, opt_state, key, min_loss = carry
            key, perm_key, step_key = jax.random.split(key, 3)
            order = jax.random.permutation(perm_key, n_train)[: steps * batch_size].reshape(steps, batch_size)

            def body(c: Any, inp: Any) -> tuple[Any, None]:
                p, s, m = c
                idx, k = inp
                p, s, loss = step(p, s, k, x_train[idx], y_train[idx])
                return (p, s, jnp.minimum(m, jnp.where(jnp.isfinite(loss), loss, jnp.inf))), None

            (params, opt_state, min_loss), _ = jax.lax.scan(
                body, (params, opt_state, min_loss), (order, jax.random.split(step_key, steps))
            )
            metrics = (*_evaluate(ds, apply, params, x_tune, y_tune), *_evaluate(ds, apply, params, x_val, y_val))
            return (params, opt_state, key, min_loss), metrics

        init = (params, opt_state, key, jnp.asarray(jnp.inf, jnp.float32))
        (_, _, _, min_loss), (ta, tl, va, vl) = jax.lax.scan(epoch, init, None, length=epochs)
        return {"tune_acc": ta, "tune_loss": tl, "val_acc": va, "val_loss": vl, "min_train_loss": min_loss}

    fn = jax.jit(jax.vmap(run))
    out = fn(
        jnp.asarray(learning_rates, jnp.float32),
        jnp.asarray(seeds, jnp.uint32),
        jnp.asarray(decays, jnp.float32),
    )
    return {k: np.asarray(v) for k, v in out.items()}


@dataclass(frozen=True)
class StepCost:
    """Cost of one training step (forward, backward, curvature vector, optimiser)."""

    seconds: float
    """Wall time of one step (mean over a round, minimum over rounds)."""
    peak_bytes: int
    """XLA's buffer assignment for the compiled step: arguments + outputs + temporaries − aliases."""
    flops: float
    """XLA's cost analysis of the compiled step."""


def measure_step_costs(
    ds: Dataset, model: str, specs: list[OptSpec], *, batch_size: int, rounds: int = 5, min_steps: int = 20
) -> dict[str, StepCost]:
    """Benchmark one training step of each optimiser in the same process.

    Steps are timed in interleaved rounds (each round runs every optimiser
    for about 0.2 s) so that load from other processes affects all of them
    alike; the reported time is the minimum over rounds of the mean step
    time (the least disturbed round, as :mod:`timeit` recommends).
    """
    x = jnp.asarray(ds.x_train[:batch_size])
    if ds.image_shape is not None and model == "cnn":
        x = jnp.reshape(x, (-1, *ds.image_shape))
    y = jnp.asarray(ds.y_train[:batch_size])
    compiled, states = {}, {}
    for spec in specs:
        params, apply = init_model(model, jax.random.key(0), x.shape[1:], ds.num_outputs)
        tx = spec.make(1e-3)
        step = jax.jit(_make_step(ds, apply, spec, tx), donate_argnums=(0, 1))
        opt_state = tx.init(params)
        key = jax.random.key(1)
        lowered = step.lower(params, opt_state, key, x, y).compile()
        mem = lowered.memory_analysis()
        peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
        cost = lowered.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        compiled[spec.name] = (lowered, peak, float(cost.get("flops", float("nan"))))
        states[spec.name] = (params, opt_state, key)

    def timed(name: str, n: int) -> float:
        fn = compiled[name][0]
        params, opt_state, key = states[name]
        jax.block_until_ready(params)
        t0 = time.perf_counter()
        for _ in range(n):
            params, opt_state, _ = fn(params, opt_state, key, x, y)
        jax.block_until_ready(params)
        states[name] = (params, opt_state, key)
        return (time.perf_counter() - t0) / n

    # warm up and size each round to about 0.2 s of work
    n_steps = {s.name: int(np.clip(0.2 / max(timed(s.name, 5), 1e-6), min_steps, 5000)) for s in specs}
    times: dict[str, list[float]] = {s.name: [] for s in specs}
    for _ in range(rounds):
        for spec in specs:
            times[spec.name].append(timed(spec.name, n_steps[spec.name]))
    return {
        s.name: StepCost(
            seconds=float(np.min(times[s.name])), peak_bytes=compiled[s.name][1], flops=compiled[s.name][2]
        )
        for s in specs
    }
