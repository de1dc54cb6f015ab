"""Ablations of the authors' released Ginger update, and the engine shared with :mod:`experiments.peers`.

The authors' update (MANGA-UOFA/Ginger, ``optimizers/ginger.py``; here
:func:`lowrank_ggn.optim.optax.lowrank_paper`) preconditions the debiased
first moment with the damped low-rank curvature (γ = 1e-5), clips the result
element-wise at ρ = 1, then scales by the learning rate. The ablations switch
one ingredient at a time: the curvature (the identity at the same scaling
1/γ), the clip, where the momentum sits (before or after preconditioning),
the damping policy, and the approximation (every factory in
:data:`APPROXIMATIONS`, generic over the approximation protocol).

Tasks (data shipped with scikit-learn): the digits deep autoencoder
64-48-24-8-24-48-64 (tanh, Gaussian likelihood), the digits MLP and the
digits CNN of :mod:`experiments.models`. Learning rates are tuned on the
tuning split (loss for the autoencoder, accuracy then loss for the
classifiers) over a small grid per configuration; each learning rate is
trained with every seed at once (``jax.vmap``). Tables give the mean ±
standard deviation over seeds at the tuned rate.

Run ``python -m experiments.ablations --out results/ablations`` (or
``python -m experiments.peers``, which runs both and writes one note).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lowrank_ggn as lg
from experiments.data import Dataset, load, load_autoencoder
from experiments.models import init_model
from lowrank_ggn.optim import damping as dp
from lowrank_ggn.optim import optax as lgo
from lowrank_ggn.optim.jax_likelihoods import negative_log_likelihood, value_grad_and_curvature

__all__ = ["APPROXIMATIONS", "TASKS", "Config", "Task", "ablation_configs", "run_config", "summarise"]

# Every approximation of the family; a new factory of the protocol joins the ablation by one line here.
# Runs are vmapped: no periodic re-orthonormalisation (see experiments/README.md, Notes).
APPROXIMATIONS: dict[str, Callable[[], Any]] = {
    "ginger": lambda: lg.ginger(rank=4, decay=0.99, reorthonormalize_every=None),
    "qng": lambda: lg.qng(rank=4, decay=0.99),
    "ginger_product": lambda: lg.ginger_product(rank=4, decay=0.99),
}
PAPER_DAMPING = 1e-5
PAPER_LRS = (1e-3, 3e-3, 1e-2)


@dataclasses.dataclass(frozen=True)
class Task:
    """One model on one dataset, with its training budget."""

    name: str
    model: str
    batch_size: int
    steps: int


TASKS = {
    "ae": Task("digits autoencoder", "ae", 128, 600),
    "mlp": Task("digits MLP", "mlp", 64, 400),
    "cnn": Task("digits CNN", "cnn", 64, 300),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """One optimiser configuration: ``make(lr, steps)`` builds it; ``lrs`` is its learning-rate grid."""

    name: str
    make: Callable[[Any, int], optax.GradientTransformation]
    lrs: tuple[float, ...]
    curvature: bool = True
    lm: bool = False
    only: tuple[str, ...] | None = None
    """Tasks this row runs on (``None``: every task); keeps the one command within about 15 minutes."""


def _paper(approx: str = "ginger", *, damping: Any = PAPER_DAMPING, clip: float | None = 1.0) -> Callable:
    def make(lr: Any, steps: int) -> optax.GradientTransformation:
        del steps
        a = APPROXIMATIONS[approx]()
        return lgo.lowrank_paper(a, lr, damping=damping if a.needs_damping else None, b1=0.9, clip=clip)

    return make


def _identity(*, clip: float | None) -> Callable:
    """Build the paper's update with no curvature: debiased momentum × 1/γ, clipped, scaled."""

    def make(lr: Any, steps: int) -> optax.GradientTransformation:
        del steps
        parts = [optax.ema(0.9, debias=True), optax.scale(1.0 / PAPER_DAMPING)]
        if clip is not None:
            parts.append(optax.clip(clip))
        return optax.chain(*parts, optax.scale_by_learning_rate(lr))

    return make


def _momentum_after(lr: Any, steps: int) -> optax.GradientTransformation:
    del steps
    return optax.chain(
        lgo.scale_by_lowrank(APPROXIMATIONS["ginger"](), damping=PAPER_DAMPING),
        optax.ema(0.9, debias=True),
        optax.clip(1.0),
        optax.scale_by_learning_rate(lr),
    )


def _library_ginger(lr: Any, steps: int) -> optax.GradientTransformation:
    del steps
    return lgo.ginger(lr, rank=4, decay=0.99, damping=1.0, momentum=0.9, reorthonormalize_every=None)


def _scheduled(lr: Any, steps: int) -> optax.GradientTransformation:
    schedule = optax.exponential_decay(1.0, transition_steps=steps, decay_rate=PAPER_DAMPING)  # γ: 1 → 1e-5
    return _paper(damping=dp.scheduled(schedule))(lr, steps)


def ablation_configs() -> list[Config]:
    """Return the ablation rows: the authors' update, then one ingredient changed per row."""
    unclipped = tuple(lr * PAPER_DAMPING for lr in (1e-2, 1e-1, 1.0))  # the update is m̂/γ: rates × γ
    rows = [
        Config("paper: Ginger, momentum → P⁻¹, clip, γ=1e-5", _paper(), PAPER_LRS),
        Config("no curvature (identity/γ), clip", _identity(clip=1.0), PAPER_LRS, curvature=False),
        Config("Ginger, no clip", _paper(clip=None), unclipped),
        Config(
            "no curvature, no clip (= SGD + momentum)", _identity(clip=None), unclipped, curvature=False, only=("ae",)
        ),
        Config("Ginger, P⁻¹ → momentum, clip", _momentum_after, PAPER_LRS, only=("ae",)),
        Config("library ginger (heavy ball after P⁻¹, γ=1)", _library_ginger, (0.03, 0.1, 0.3)),
        Config("damping scheduled 1 → 1e-5", _scheduled, PAPER_LRS, only=("ae",)),
        Config(
            "damping Levenberg–Marquardt (γ₀=1)",
            _paper(damping=dp.levenberg_marquardt(1.0)),
            PAPER_LRS,
            lm=True,
            only=("ae",),
        ),
    ]
    rows += [
        Config(f"{name}, paper update", _paper(name), PAPER_LRS, only=("ae", "mlp"))
        for name in APPROXIMATIONS
        if name != "ginger"
    ]
    return rows


def load_task(key: str) -> Dataset:
    """Load the dataset of a task: the autoencoder's digits in [0, 1], or the standardised digits."""
    return load_autoencoder() if key == "ae" else load("digits")


def _arrays(ds: Dataset, model: str) -> dict[str, jax.Array]:
    out = {}
    for split in ("train", "tune", "val"):
        x, y = jnp.asarray(getattr(ds, f"x_{split}")), jnp.asarray(getattr(ds, f"y_{split}"))
        if model == "cnn":
            x = jnp.reshape(x, (-1, *ds.image_shape))
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


def _loss_and_acc(ds: Dataset, apply: Any, params: Any, x: Any, y: Any) -> tuple[Any, Any]:
    out = apply(params, x)
    loss = jnp.mean(negative_log_likelihood(out, y, ds.likelihood))
    acc = jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32)) if ds.likelihood == "categorical" else jnp.nan
    ok = jnp.isfinite(loss)
    return jnp.where(ok, loss, jnp.inf), jnp.where(ok, acc, 0.0)


def _ggn_quadratic(ds: Dataset, fn: Any, params: Any, delta: Any, outputs: Any) -> Any:
    """δᵀ G δ for the GGN of the batch-mean negative log-likelihood (Gaussian or categorical)."""
    _, v = jax.jvp(fn, (params,), (delta,))
    if ds.likelihood == "gaussian":
        return jnp.mean(jnp.sum(v**2, axis=-1))
    p = jax.nn.softmax(outputs, -1)
    return jnp.mean(jnp.sum(p * v**2, -1) - jnp.sum(p * v, -1) ** 2)


def make_step(ds: Dataset, apply: Any, tx: optax.GradientTransformation, cfg: Config) -> Callable:
    """One training step ``(params, opt_state, ratio, key, xb, yb) -> (params, opt_state, ratio, loss)``."""

    def step(params: Any, opt_state: Any, ratio: Any, key: Any, xb: Any, yb: Any) -> tuple:
        fn = lambda p: apply(p, xb)  # noqa: E731
        if cfg.curvature:
            loss, grads, curv, outputs = value_grad_and_curvature(fn, params, yb, key, ds.likelihood)
            extra = {"curvature": curv}
        else:
            (loss, outputs), grads = jax.value_and_grad(
                lambda p: (jnp.mean(negative_log_likelihood(fn(p), yb, ds.likelihood)), fn(p)), has_aux=True
            )(params)
            extra = {}
        if cfg.lm:
            extra["reduction_ratio"] = ratio
        updates, opt_state = tx.update(grads, opt_state, params, **extra)
        new_params = optax.apply_updates(params, updates)
        if cfg.lm:  # ρ of this step on this batch, against the GGN's damped quadratic model (as kfac-jax)
            gamma = opt_state.precondition.damping
            gd = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(updates), strict=True))
            sq = sum(jnp.vdot(u, u) for u in jax.tree.leaves(updates))
            q = dp.quadratic_change(gd, _ggn_quadratic(ds, fn, params, updates, outputs), sq, gamma)
            after = jnp.mean(negative_log_likelihood(fn(new_params), yb, ds.likelihood))
            ratio = dp.reduction_ratio(loss, after, q)
        return new_params, opt_state, ratio, loss

    return step


_CACHE: dict[tuple, dict[str, np.ndarray]] = {}


def run_config(
    ds: Dataset, task: Task, cfg: Config, seeds: list[int], *, eval_every: int = 10
) -> dict[str, np.ndarray]:
    """Train every (learning rate, seed) of ``cfg`` at once; return per-run curves and final metrics.

    Returns
    -------
    dict
        ``train_curve`` (lrs, seeds, steps // eval_every): full training-split loss every
        ``eval_every`` steps; ``train_loss``, ``tune_loss``, ``tune_acc``, ``val_loss``,
        ``val_acc`` (lrs, seeds) at the end; ``seconds``: wall time of the whole call.
    """
    key = (ds.name, task, cfg.name, cfg.lrs, tuple(seeds), eval_every)
    if key in _CACHE:  # the peers table reuses the ablation's runs of the same configuration
        return _CACHE[key]
    arr = _arrays(ds, task.model)
    n_train = arr["x_train"].shape[0]
    n_evals = task.steps // eval_every
    lrs = np.repeat(np.asarray(cfg.lrs, np.float32), len(seeds))
    sds = np.tile(np.asarray(seeds, np.uint32), len(cfg.lrs))

    def run(lr: Any, seed: Any) -> dict[str, Any]:
        key = jax.random.key(seed)
        key, init_key = jax.random.split(key)
        params, apply = init_model(task.model, init_key, arr["x_train"].shape[1:], ds.num_outputs)
        tx = cfg.make(lr, task.steps)
        step = make_step(ds, apply, tx, cfg)
        opt_state = tx.init(params)

        def inner(carry: Any, k: Any) -> tuple[Any, None]:
            p, s, r = carry
            k1, k2 = jax.random.split(k)
            idx = jax.random.choice(k1, n_train, (task.batch_size,), replace=False)
            p, s, r, _ = step(p, s, r, k2, arr["x_train"][idx], arr["y_train"][idx])
            return (p, s, r), None

        def outer(carry: Any, k: Any) -> tuple[Any, Any]:
            carry, _ = jax.lax.scan(inner, carry, jax.random.split(k, eval_every))
            return carry, _loss_and_acc(ds, apply, carry[0], arr["x_train"], arr["y_train"])[0]

        init = (params, opt_state, jnp.asarray(0.5, jnp.float32))
        (params, _, _), curve = jax.lax.scan(outer, init, jax.random.split(key, n_evals))
        tl, ta = _loss_and_acc(ds, apply, params, arr["x_tune"], arr["y_tune"])
        vl, va = _loss_and_acc(ds, apply, params, arr["x_val"], arr["y_val"])
        return {"train_curve": curve, "tune_loss": tl, "tune_acc": ta, "val_loss": vl, "val_acc": va}

    t0 = time.perf_counter()
    out = jax.jit(jax.vmap(run))(jnp.asarray(lrs), jnp.asarray(sds))
    out = {k: np.asarray(v).reshape(len(cfg.lrs), len(seeds), *np.shape(v)[1:]) for k, v in out.items()}
    out["train_curve"] = np.where(np.isfinite(out["train_curve"]), out["train_curve"], np.inf)
    out["train_loss"] = out["train_curve"][..., -1]
    out["seconds"] = np.asarray(time.perf_counter() - t0)
    _CACHE[key] = out
    return out


def tuned_index(ds: Dataset, res: dict[str, np.ndarray]) -> int:
    """Return the index of the tuned learning rate: lowest mean tuning loss (autoencoder), else best mean accuracy."""
    loss = np.where(np.isfinite(res["tune_loss"]), res["tune_loss"], np.inf).mean(1)
    if ds.likelihood != "categorical":
        return int(np.argmin(loss))
    acc = res["tune_acc"].mean(1)
    best = np.flatnonzero(acc >= acc.max() - 1e-6)
    return int(best[np.argmin(loss[best])])


def _ms(x: np.ndarray, fmt: str = "{:.3f}") -> str:
    x = np.asarray(x, float)
    if not np.all(np.isfinite(x)):
        return "diverged" if not np.any(np.isfinite(x)) else f"{np.sum(~np.isfinite(x))} diverged"
    return f"{fmt.format(x.mean())} ± {fmt.format(x.std(ddof=1) if x.size > 1 else 0.0)}"


def summarise(ds: Dataset, cfg_name: str, lrs: tuple, res: dict[str, np.ndarray]) -> dict[str, Any]:
    """One table row: the tuned rate and mean ± std over seeds of the final metrics at that rate."""
    i = tuned_index(ds, res)
    row = {
        "optimiser": cfg_name,
        "lr": f"{lrs[i]:.3g}",
        "train loss": _ms(res["train_loss"][i], "{:.3g}"),
        "val loss": _ms(res["val_loss"][i], "{:.3g}"),
        "val acc %": "–" if ds.likelihood != "categorical" else _ms(100 * res["val_acc"][i], "{:.1f}"),
    }
    return {"row": row, "index": i}


def markdown(rows: list[dict[str, str]]) -> str:
    """Return a markdown table of rows (dicts with the same keys)."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def run_ablations(tasks: list[str], seeds: list[int], *, log: Callable[[str], None] = print) -> dict[str, list]:
    """Run every ablation row on every task; return the table rows per task."""
    tables: dict[str, list] = {}
    for key in tasks:
        task, ds = TASKS[key], load_task(key)
        rows = []
        for cfg in ablation_configs():
            if cfg.only is not None and key not in cfg.only:
                continue
            res = run_config(ds, task, cfg, seeds)
            rows.append(summarise(ds, cfg.name, cfg.lrs, res)["row"])
            log(f"[ablation {key}] {cfg.name}: {rows[-1]['train loss']} ({float(res['seconds']):.0f} s)")
        tables[key] = rows
    return tables


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m experiments.ablations --out DIR [--tasks ae,mlp,cnn] [--seeds 3]``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.ablations", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", default="ae,mlp,cnn")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    tasks = args.tasks.split(",")
    for t in tasks:
        if t not in TASKS:
            parser.error(f"--tasks: unknown task {t!r}; choose from {sorted(TASKS)}")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the tables give spreads)")
    args.out.mkdir(parents=True, exist_ok=True)
    tables = run_ablations(tasks, list(range(args.seeds)))
    text = "\n\n".join(f"### Ablation — {TASKS[k].name}\n\n{markdown(v)}" for k, v in tables.items())
    (args.out / "ablations.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
