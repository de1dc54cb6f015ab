"""Ginger against real peers, and the ablations, in one run: ``python -m experiments.peers --out DIR``.

Peers, installed from the package index (``pip install -e .[peers]``): kfac-jax's
``Optimizer`` (K-FAC with its adaptive learning rate, momentum and
Levenberg–Marquardt damping, the library's recommended mode, so no rate
grid), heavyball's ``SOAP`` and ``PSGDKron`` (PyTorch, eager: heavyball's
``torch.compile`` is switched off), optax's Adam and SGD with momentum, and
this library's ``ginger_paper`` (the authors' update) and ``ginger``. A peer
that cannot be imported is left out of the table, with a note.

Metrics per task at the rate tuned on the tuning split (mean ± std over
seeds): final training loss (the whole training split), validation accuracy,
steps to a target training loss (1.1 × Adam's mean final training loss;
evaluated every 10 steps), the wall-clock time to it (steps × the measured
time per step), and the time per step as a multiple of the time of one
gradient of the same model in the same framework (jitted in JAX; eager in
PyTorch), measured once, single run, on this machine.

The JAX runs train all seeds of a rate at once (``jax.vmap``); kfac-jax and
the torch peers train one run at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import ablations as A  # noqa: N812
from experiments.data import Dataset
from experiments.models import AE_WIDTHS, init_model
from lowrank_ggn.optim.jax_likelihoods import negative_log_likelihood

__all__ = ["main"]

EVAL_EVERY = 10
TARGET_FACTOR = 1.1


def _adam(lr: Any, steps: int) -> optax.GradientTransformation:
    del steps
    return optax.adam(lr, b1=0.9, b2=0.99)


def _sgd(lr: Any, steps: int) -> optax.GradientTransformation:
    del steps
    return optax.sgd(lr, momentum=0.9)


def _jax_configs() -> list[A.Config]:
    rows = A.ablation_configs()  # the same configurations (and cached runs) as the ablation's first and library rows
    return [
        A.Config("Adam (0.9, 0.99)", _adam, (1e-3, 3e-3, 1e-2), curvature=False),
        A.Config("SGD + momentum 0.9", _sgd, (0.03, 0.1, 0.3), curvature=False),
        rows[0],
        next(r for r in rows if r.name.startswith("library ginger")),
    ]


# -- timing ------------------------------------------------------------------------------------------


def _jax_step_ratio(ds: Dataset, task: A.Task, cfg: A.Config, n: int = 30) -> tuple[float, float]:
    """Return (time of one jitted training step of ``cfg`` / time of one jitted gradient, step seconds)."""
    arr = A._arrays(ds, task.model)  # noqa: SLF001
    params, apply = init_model(task.model, jax.random.key(0), arr["x_train"].shape[1:], ds.num_outputs)
    xb, yb = arr["x_train"][: task.batch_size], arr["y_train"][: task.batch_size]
    tx = cfg.make(1e-3, task.steps)
    step = jax.jit(A.make_step(ds, apply, tx, cfg))
    grad = jax.jit(jax.grad(lambda p: jnp.mean(negative_log_likelihood(apply(p, xb), yb, ds.likelihood))))
    state, ratio, key = tx.init(params), jnp.asarray(0.5), jax.random.key(1)

    def timed(fn: Any) -> float:
        jax.block_until_ready(fn())
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                out = fn()
            jax.block_until_ready(out)
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    t_step = timed(lambda: step(params, state, ratio, key, xb, yb)[0])
    t_grad = timed(lambda: grad(params))
    return t_step / t_grad, t_step


# -- kfac-jax ------------------------------------------------------------------------------------------


def _kfac_runs(ds: Dataset, task: A.Task, seeds: list[int]) -> dict[str, Any]:
    import kfac_jax

    arr = A._arrays(ds, task.model)  # noqa: SLF001
    n_train = arr["x_train"].shape[0]
    _, apply = init_model(task.model, jax.random.key(0), arr["x_train"].shape[1:], ds.num_outputs)

    def loss_fn(params: Any, batch: Any) -> Any:
        x, y = batch
        out = apply(params, x)
        if ds.likelihood == "gaussian":
            kfac_jax.register_squared_error_loss(out, y)  # ½‖y − f‖², the Gaussian NLL of variance 1
        else:
            kfac_jax.register_softmax_cross_entropy_loss(out, y)
        return jnp.mean(negative_log_likelihood(out, y, ds.likelihood))

    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn),
        l2_reg=0.0,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        use_adaptive_damping=True,
        initial_damping=1.0,
        multi_device=False,
        num_burnin_steps=0,  # the burn-in needs a data iterator; the curvature EMA starts at step 0 instead
    )
    full = jax.jit(lambda p, x, y: A._loss_and_acc(ds, apply, p, x, y))  # noqa: SLF001
    curves, finals, times = [], [], []
    for seed in seeds:
        key = jax.random.key(seed)
        key, init_key = jax.random.split(key)
        params, _ = init_model(task.model, init_key, arr["x_train"].shape[1:], ds.num_outputs)
        rng = np.random.default_rng(seed)

        def batch(rng: Any = rng) -> tuple[Any, Any]:
            idx = rng.choice(n_train, task.batch_size, replace=False)
            return arr["x_train"][idx], arr["y_train"][idx]

        key, k = jax.random.split(key)
        state = opt.init(params, k, batch())
        curve, step_times = [], []
        for i in range(task.steps):
            key, k = jax.random.split(key)
            b = batch()
            t0 = time.perf_counter()
            params, state, _ = opt.step(params, state, k, batch=b, global_step_int=i)
            jax.block_until_ready(params)
            step_times.append(time.perf_counter() - t0)
            if (i + 1) % EVAL_EVERY == 0:
                curve.append(float(full(params, arr["x_train"], arr["y_train"])[0]))
        curves.append(curve)
        finals.append(
            [float(v) for v in (*full(params, arr["x_tune"], arr["y_tune"]), *full(params, arr["x_val"], arr["y_val"]))]
        )
        times.append(float(np.median(step_times[5:])))
    c = np.asarray(curves)[None]
    f = np.asarray(finals)[None]
    res = {
        "train_curve": np.where(np.isfinite(c), c, np.inf),
        "tune_loss": f[..., 0],
        "tune_acc": f[..., 1],
        "val_loss": f[..., 2],
        "val_acc": f[..., 3],
    }
    res["train_loss"] = res["train_curve"][..., -1]
    res["step_seconds"] = float(np.median(times))
    return res


# -- torch peers ------------------------------------------------------------------------------------


def _torch_model(task: A.Task, ds: Dataset, seed: int) -> Any:
    import torch
    from torch import nn

    from experiments.torch_train import MLP, ResidualCNN

    torch.manual_seed(seed)
    if task.model == "mlp":
        return MLP(ds.x_train.shape[1], ds.num_outputs)
    if task.model == "cnn":
        return ResidualCNN(ds.num_outputs)
    widths = (ds.x_train.shape[1], *AE_WIDTHS, ds.x_train.shape[1])
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _torch_runs(ds: Dataset, task: A.Task, name: str, lrs: tuple, seeds: list[int]) -> dict[str, Any]:
    import heavyball
    import heavyball.utils
    import torch

    heavyball.utils.compile_mode = None  # eager: no C++ toolchain needed, fair against eager gradients
    torch.set_num_threads(1)
    factory = {"SOAP": heavyball.SOAP, "PSGDKron": heavyball.PSGDKron}[name]

    def t(a: np.ndarray, *, like_y: bool = False) -> Any:
        x = torch.as_tensor(a)
        if task.model == "cnn" and not like_y:
            x = x.reshape(-1, 1, 8, 8)
        return x.long() if like_y and ds.likelihood == "categorical" else x

    data = {s: (t(getattr(ds, f"x_{s}")), t(getattr(ds, f"y_{s}"), like_y=True)) for s in ("train", "tune", "val")}

    def loss_fn(out: Any, y: Any) -> Any:
        if ds.likelihood == "gaussian":
            return 0.5 * ((out - y) ** 2).sum(1).mean()
        return torch.nn.functional.cross_entropy(out, y)

    def metrics(net: Any, split: str) -> tuple[float, float]:
        with torch.no_grad():
            x, y = data[split]
            out = net(x)
            loss = float(loss_fn(out, y))
            acc = float((out.argmax(-1) == y).float().mean()) if ds.likelihood == "categorical" else np.nan
        return (loss, acc) if np.isfinite(loss) else (np.inf, 0.0)

    n_train = data["train"][0].shape[0]
    keys = ("train_curve", "tune_loss", "tune_acc", "val_loss", "val_acc")
    res: dict[str, list] = {k: [] for k in keys}
    step_times, grad_times = [], []
    for lr in lrs:
        per = {k: [] for k in keys}
        for seed in seeds:
            net = _torch_model(task, ds, seed)
            opt = factory(net.parameters(), lr=lr)
            gen = torch.Generator().manual_seed(seed)
            curve = []
            for i in range(task.steps):
                idx = torch.randperm(n_train, generator=gen)[: task.batch_size]
                xb, yb = data["train"][0][idx], data["train"][1][idx]
                t0 = time.perf_counter()
                opt.zero_grad()
                loss_fn(net(xb), yb).backward()
                t1 = time.perf_counter()
                opt.step()
                t2 = time.perf_counter()
                if i >= 5:
                    grad_times.append(t1 - t0)
                    step_times.append(t2 - t0)
                if (i + 1) % EVAL_EVERY == 0:
                    curve.append(metrics(net, "train")[0])
            per["train_curve"].append(curve)
            for split in ("tune", "val"):
                loss, acc = metrics(net, split)
                per[f"{split}_loss"].append(loss)
                per[f"{split}_acc"].append(acc)
        for k in keys:
            res[k].append(per[k])
    out = {k: np.asarray(v, float) for k, v in res.items()}
    out["train_curve"] = np.where(np.isfinite(out["train_curve"]), out["train_curve"], np.inf)
    out["train_loss"] = out["train_curve"][..., -1]
    out["step_seconds"] = float(np.median(step_times))
    out["ratio"] = float(np.median(step_times) / np.median(grad_times))
    return out


# -- tables ---------------------------------------------------------------------------------------------


def _to_target(curve: np.ndarray, target: float) -> list[float]:
    out = []
    for c in curve:
        hit = np.flatnonzero(c <= target)
        out.append((hit[0] + 1) * EVAL_EVERY if hit.size else np.nan)
    return out


def _peer_row(ds: Dataset, name: str, lrs: tuple, res: dict, target: float, ratio: float, step_s: float) -> dict:
    s = A.summarise(ds, name, lrs, res)
    row, i = s["row"], s["index"]
    steps = np.asarray(_to_target(res["train_curve"][i], target))
    reached = np.isfinite(steps)
    if reached.all():
        row["steps to target"] = A._ms(steps, "{:.0f}")  # noqa: SLF001
        row["time to target (s)"] = A._ms(steps * step_s, "{:.2f}")  # noqa: SLF001
    else:
        row["steps to target"] = f"{int(reached.sum())}/{reached.size} reached"
        row["time to target (s)"] = "–"
    row["time/step ÷ gradient"] = f"{ratio:.1f}×"
    return row


def run_peers(tasks: list[str], seeds: list[int], *, log: Any = print) -> tuple[dict[str, list], list[str]]:
    """Run every peer on every task; return the table rows per task and notes on peers left out."""
    notes = []
    have_kfac = importlib.util.find_spec("kfac_jax") is not None
    have_heavyball = importlib.util.find_spec("heavyball") is not None
    if not have_kfac:
        notes.append("kfac-jax is not installed (`pip install -e .[peers]`): left out.")
    if not have_heavyball:
        notes.append("heavyball is not installed (`pip install -e .[peers]`): SOAP and PSGD left out.")
    tables: dict[str, list] = {}
    for key in tasks:
        task, ds = A.TASKS[key], A.load_task(key)
        results = []
        for cfg in _jax_configs():
            res = A.run_config(ds, task, cfg, seeds, eval_every=EVAL_EVERY)
            ratio, step_s = _jax_step_ratio(ds, task, cfg)
            results.append((cfg.name, cfg.lrs, res, ratio, step_s))
            log(f"[peers {key}] {cfg.name}: {float(res['seconds']):.0f} s")
        if have_kfac:
            try:
                res = _kfac_runs(ds, task, seeds)
                r_sgd, t_sgd = _jax_step_ratio(ds, task, _jax_configs()[1])
                ratio = res["step_seconds"] / (t_sgd / r_sgd)  # over the jitted gradient's time
                name = "kfac-jax (adaptive lr, momentum, damping)"
                results.append((name, ("auto",), res, ratio, res["step_seconds"]))
                log(f"[peers {key}] kfac-jax done")
            except Exception as err:  # noqa: BLE001 - a peer that fails is reported, not fatal
                notes.append(f"kfac-jax failed on the {task.name}: {type(err).__name__}: {str(err)[:160]}")
        if have_heavyball:
            for name, lrs in (("SOAP", (1e-3, 3e-3, 1e-2)), ("PSGDKron", (3e-4, 1e-3, 3e-3))):
                try:
                    res = _torch_runs(ds, task, name, lrs, seeds)
                    results.append((f"heavyball {name} (torch)", lrs, res, res["ratio"], res["step_seconds"]))
                    log(f"[peers {key}] {name} done")
                except Exception as err:  # noqa: BLE001
                    notes.append(f"heavyball {name} failed on the {task.name}: {type(err).__name__}: {str(err)[:160]}")
        adam = results[0]
        target = TARGET_FACTOR * float(adam[2]["train_loss"][A.tuned_index(ds, adam[2])].mean())
        rows = [_peer_row(ds, n, lrs, r, target, ratio, s) for n, lrs, r, ratio, s in results]
        tables[key] = (rows, target)
    return tables, notes


def main(argv: list[str] | None = None) -> int:
    """Command line: the ablations and the peers, one note ``DIR/results.md``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", default="ae,mlp,cnn")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip-ablations", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="override every task's number of steps (smoke runs)")
    args = parser.parse_args(argv)
    if args.steps is not None:
        if args.steps < EVAL_EVERY:
            parser.error(f"--steps must be at least {EVAL_EVERY}")
        for k, task in list(A.TASKS.items()):
            A.TASKS[k] = dataclasses.replace(task, steps=args.steps)
    tasks = args.tasks.split(",")
    for t in tasks:
        if t not in A.TASKS:
            parser.error(f"--tasks: unknown task {t!r}; choose from {sorted(A.TASKS)}")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the tables give spreads)")
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    abl = {} if args.skip_ablations else A.run_ablations(tasks, seeds)
    peers, notes = run_peers(tasks, seeds)
    minutes = (time.perf_counter() - t0) / 60
    budget = ", ".join(f"{A.TASKS[k].name}: {A.TASKS[k].steps} steps of batch {A.TASKS[k].batch_size}" for k in tasks)
    lines = [
        f"Generated by `python -m experiments.peers --out {args.out}` ({minutes:.1f} min here; seeds {seeds};",
        f"{budget}; learning rates tuned on the tuning split over the 3-point grids in experiments/ablations.py",
        "and experiments/peers.py). Entries: mean ± sample std over seeds at the tuned rate. Target loss:",
        f"{TARGET_FACTOR} × Adam's mean final training loss; time to target = steps × measured time per step.",
        "",
    ]
    for k in tasks:
        if k in abl:
            lines += [f"### Ablation — {A.TASKS[k].name}", "", A.markdown(abl[k]), ""]
        rows, target = peers[k]
        lines += [f"### Peers — {A.TASKS[k].name} (target training loss {target:.4g})", "", A.markdown(rows), ""]
    lines += [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
