r"""Long float32 soak of Ginger against a float64 run of the same stream.

Runs ``steps`` Ginger updates (eigen path) at ``dim`` parameters and rank τ on a
power-law curvature stream, in float64 (the reference) and in float32 with
several re-orthonormalisation periods, all in lockstep on the same vectors,
and records every ``every`` steps:

* ``orth``: the spectral norm ``‖UᵀU − I‖₂`` of the float32 basis;
* ``eig_rel``: ``max_i |σ32_i − σ64_i| / σ64_i`` (relative error of every
  eigenvalue) and ``eig_rel_top``: the same over the eigenvalues whose gap to
  the truncation boundary is resolved (see below);
* ``dir_rel[γ]``: ``‖y32 − y64‖ / ‖y64‖`` with ``y = (γI + UΣUᵀ)⁻¹ g`` for a
  fresh vector ``g`` of the stream, at ``γ = ratio · σ64_1``;
* ``nonfinite``: whether any state entry or query result is not finite;
* the wall time of each configuration, as a ratio to the run without
  re-orthonormalisation (measured in the same process).

The stream is ``d_t = Q (√s ⊙ z_t)`` with ``s_i = i^{-exponent}``,
``z_t ~ N(0, I)`` and ``Q`` an orthogonal transform applied in O(dim log dim):
a random sign flip, an orthonormal DCT-II and a random permutation, so that
``E[d dᵀ] = Q diag(s) Qᵀ`` has dense eigenvectors.

Usage::

    python benchmarks/soak_float32.py                      # the full soak: 1e5 steps, d = 1e4
    python benchmarks/soak_float32.py --steps 5000 --dim 2000   # a quick look

It writes ``benchmarks/results/soak_float32.json`` and prints a markdown table.
JAX (``lax.scan`` under ``jax.jit``) is used when available, NumPy otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import lowrank_ggn as lg  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DAMPING_RATIOS = (1e-1, 1e-2, 1e-3)


class PowerLawStream:
    """Curvature vectors with covariance ``Q diag(i^-exponent) Qᵀ``, Q a fast orthogonal transform."""

    def __init__(self, dim: int, exponent: float, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.sqrt_s = np.arange(1, dim + 1, dtype=np.float64) ** (-exponent / 2)
        self.signs = self.rng.choice([-1.0, 1.0], size=dim)
        self.perm = self.rng.permutation(dim)

    def draw(self, n: int) -> np.ndarray:
        """Return ``n`` vectors, shape (n, dim), float64."""
        z = self.rng.standard_normal((n, self.sqrt_s.shape[0])) * self.sqrt_s
        return scipy.fft.dct(z * self.signs, type=2, norm="ortho", axis=1)[:, self.perm]


def _orth_error(basis: np.ndarray) -> float:
    u = basis.astype(np.float64)
    return float(np.linalg.norm(u.T @ u - np.eye(u.shape[1]), 2))


def _precondition(state: lg.GingerState, g: np.ndarray, damping: float, to_ns: Any) -> np.ndarray:
    y = lg.ginger_precondition(
        state, to_ns(g.astype(np.asarray(lg.backends.to_numpy(state.basis)).dtype)), damping=damping
    )
    return np.asarray(lg.backends.to_numpy(y), dtype=np.float64)


def _make_runner(
    backend: str, dtype_name: str, reorth: int | str | None, decay: float, *, x64: bool = True
) -> tuple[Any, Any, Any]:
    """Return ``(init_state, advance(state, chunk) -> state, to_namespace)`` for one configuration."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", x64)
        dtype = getattr(jnp, dtype_name)

        def body(s: lg.GingerState, d: Any) -> tuple[lg.GingerState, None]:
            return lg.ginger_update(s, d, decay=decay, reorthonormalize_every=reorth), None

        scan = jax.jit(lambda s, chunk: jax.lax.scan(body, s, chunk)[0])

        def advance(s: lg.GingerState, chunk: np.ndarray) -> lg.GingerState:
            out = scan(s, jnp.asarray(chunk, dtype=dtype))
            out.basis.block_until_ready()
            return out

        return lambda dim, rank: lg.ginger_init(dim, rank, xp=jnp, dtype=dtype), advance, jnp.asarray

    dtype = np.dtype(dtype_name)

    def advance_np(s: lg.GingerState, chunk: np.ndarray) -> lg.GingerState:
        for d in chunk.astype(dtype):
            s = lg.ginger_update(s, d, decay=decay, reorthonormalize_every=reorth)
        return s

    return lambda dim, rank: lg.ginger_init(dim, rank, xp=np, dtype=dtype), advance_np, np.asarray


def soak(
    *,
    dim: int = 10_000,
    rank: int = 16,
    decay: float = 0.999,
    steps: int = 100_000,
    every: int = 1000,
    exponent: float = 1.5,
    periods: tuple[int | str | None, ...] = (None, 100, 50, 10),
    backend: str = "jax",
    seed: int = 0,
    x64: bool = True,
    log: Any = print,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Run the soak and return its record (see the module docstring).

    With ``partial``, the record so far is written there after every measurement.
    """
    stream = PowerLawStream(dim, exponent, seed)
    # Without x64 JAX has no float64: the reference then runs on NumPy.
    ref_backend = backend if x64 else "numpy"
    configs: dict[str, tuple[Any, Any, Any]] = {"float64": _make_runner(ref_backend, "float64", None, decay)}
    for k in periods:
        configs[f"float32/{k}"] = _make_runner(backend, "float32", k, decay, x64=x64)
    states = {name: init(dim, rank) for name, (init, _, _) in configs.items()}
    chunk_times: dict[str, list[float]] = {name: [] for name in configs}
    history: list[dict[str, Any]] = []
    done = 0
    while done < steps:
        n = min(every, steps - done)
        chunk = stream.draw(n)
        for name, (_, advance, _) in configs.items():
            t0 = time.perf_counter()
            states[name] = advance(states[name], chunk)
            if done > 0:  # the first chunk includes compilation
                chunk_times[name].append(time.perf_counter() - t0)
        done += n
        g = stream.draw(1)[0]
        history.append(_measure(done, states, configs, g))
        log(_progress(history[-1]))
        if partial is not None:
            partial.write_text(json.dumps(_record(locals()), indent=1))
    return _record(locals())


def _record(run: dict[str, Any]) -> dict[str, Any]:
    """Assemble the soak's record from the local variables of :func:`soak` (also for a partial run)."""
    chunk_times, periods = run["chunk_times"], run["periods"]
    # The CPU is shared: compare configurations chunk by chunk (they run interleaved on the
    # same vectors) and report the median ratio, which is robust to load from other processes.
    base = np.asarray(chunk_times[f"float32/{periods[0]}"])
    steps_done = run["history"][-1]["step"] if run["history"] else 0
    dim, rank, decay, exponent, backend, seed, history, x64 = (
        run[k] for k in ("dim", "rank", "decay", "exponent", "backend", "seed", "history", "x64")
    )
    steps = run["steps"]
    return {
        "dim": dim,
        "rank": rank,
        "decay": decay,
        "steps": steps,
        "exponent": exponent,
        "backend": backend,
        "seed": seed,
        "x64": x64,
        "damping_ratios": list(DAMPING_RATIOS),
        "steps_done": steps_done,
        "time_ratio": {
            name: float(np.median(np.asarray(t) / base)) if len(t) else float("nan") for name, t in chunk_times.items()
        },
        "history": history,
    }


def _measure(step: int, states: dict[str, Any], configs: dict[str, Any], g: np.ndarray) -> dict[str, Any]:
    ref = states["float64"]
    to_np = lg.backends.to_numpy
    s64 = np.asarray(to_np(ref.eigvals), dtype=np.float64)
    # Eigenvalues whose distance to the truncation boundary exceeds 10% are "resolved":
    # their float32 and float64 values must agree; the ones near σ_τ may legitimately swap.
    resolved = s64 >= 1.1 * s64[-1]
    ys64 = {r: _precondition(ref, g, r * s64[0], configs["float64"][2]) for r in DAMPING_RATIOS}
    row: dict[str, Any] = {"step": step, "sigma64": s64.tolist()}
    for name, state in states.items():
        if name == "float64":
            row[name] = {"orth": _orth_error(np.asarray(to_np(state.basis)))}
            continue
        s32 = np.asarray(to_np(state.eigvals), dtype=np.float64)
        rel = np.abs(s32 - s64) / s64
        dirs = {}
        finite = bool(np.all(np.isfinite(np.asarray(to_np(state.basis))))) and bool(np.all(np.isfinite(s32)))
        for r in DAMPING_RATIOS:
            y = _precondition(state, g, r * s64[0], configs[name][2])
            finite &= bool(np.all(np.isfinite(y)))
            dirs[str(r)] = float(np.linalg.norm(y - ys64[r]) / np.linalg.norm(ys64[r]))
        row[name] = {
            "orth": _orth_error(np.asarray(to_np(state.basis))),
            "eig_rel": float(rel.max()),
            "eig_rel_top": float(rel[resolved].max()),
            "dir_rel": dirs,
            "nonfinite": not finite,
            "rejected": int(to_np(state.num_nonfinite)),
        }
    return row


def _progress(row: dict[str, Any]) -> str:
    parts = [f"step {row['step']:>7}"]
    for name, m in row.items():
        if isinstance(m, dict) and "eig_rel" in m:
            parts.append(
                f"{name}: orth {m['orth']:.1e} eig {m['eig_rel']:.1e} dir(1e-3) {m['dir_rel']['0.001']:.1e}"
                + (" NONFINITE" if m["nonfinite"] else "")
            )
    return " | ".join(parts)


def summary(record: dict[str, Any]) -> str:
    """Markdown table: worst value over the run of each metric, per configuration."""
    hist = record["history"]
    names = [k for k in hist[-1] if k.startswith("float32/")]
    head = (
        "| float32 run | max ‖UᵀU − I‖₂ | max eig. rel. err. (all / resolved) "
        + "".join(f"| max dir. rel. err. γ = {r:g}·σ₁ " for r in record["damping_ratios"])
        + "| non-finite | time vs. no re-orth. |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name in names:
        k = name.split("/")[1]
        label = {"None": "never", "auto": 'with the default ("auto")'}.get(k, f"every {k} steps")
        orth = max(h[name]["orth"] for h in hist)
        eig = max(h[name]["eig_rel"] for h in hist)
        top = max(h[name]["eig_rel_top"] for h in hist)
        dirs = [max(h[name]["dir_rel"][str(r)] for h in hist) for r in record["damping_ratios"]]
        bad = any(h[name]["nonfinite"] for h in hist)
        ratio = record["time_ratio"][name]
        lines.append(
            f"| re-orthonormalise {label} | {orth:.1e} | {eig:.1e} / {top:.1e} "
            + "".join(f"| {x:.1e} " for x in dirs)
            + f"| {'yes' if bad else 'no'} | {ratio:.2f} |"
        )
    orth64 = max(h["float64"]["orth"] for h in hist)
    lines.append("")
    lines.append(
        f"d = {record['dim']}, τ = {record['rank']}, α = {record['decay']}, {record['steps']} steps, "
        f"spectrum i^-{record['exponent']}, backend {record['backend']}"
        f"{'' if record.get('x64', True) else ' without jax_enable_x64 (reference on NumPy)'}; float64 reference: "
        f"max ‖UᵀU − I‖₂ = {orth64:.1e}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10_000)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--exponent", type=float, default=1.5)
    parser.add_argument(
        "--periods", default="none,100,50,10", help="comma-separated; 'none' = never, 'auto' = the library default"
    )
    parser.add_argument("--backend", choices=["jax", "numpy"], default="jax")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-x64",
        action="store_true",
        help="JAX without jax_enable_x64 (float32 small eigendecompositions); the float64 reference runs on NumPy",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "soak_float32.json")
    args = parser.parse_args(argv)
    names = [p.strip().lower() for p in args.periods.split(",")]
    periods = tuple(None if p == "none" else p if p == "auto" else int(p) for p in names)
    record = soak(
        dim=args.dim,
        rank=args.rank,
        decay=args.decay,
        steps=args.steps,
        every=args.every,
        exponent=args.exponent,
        periods=periods,
        backend=args.backend,
        seed=args.seed,
        x64=not args.no_x64,
        log=lambda s: print(s, flush=True),
        partial=args.out,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, allow_nan=True))
    print(summary(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
