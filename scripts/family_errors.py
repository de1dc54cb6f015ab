"""Measured errors of the approximation family and of DampedLowRank against dense float64 NumPy references.

Usage:
    python scripts/family_errors.py [--backends numpy,array_api_strict,jax,torch] [--dim 100] [--rank 8]
        [--steps 30] [--problems 3] [--seed 0] [--out FILE]
    python scripts/family_errors.py --stream digits-mlp [--steps 300] [--rank 8] [--decay 0.95]

Default mode: for each backend × dtype (float32, float64), over ``--problems`` random problems drawn from
``--seed``, the largest error of each property (rows) against a dense float64 NumPy reference built from the
same (dtype-rounded) inputs; prints one markdown table and writes it to ``--out``.

``--stream NAME`` mode: the tightness ‖M − M̃‖₂ / ρ of the certificate ρ for Ginger and Frequent Directions on a
real stream (NumPy float64, dense EMA as the reference), one row per checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import lowrank_ggn as lg
from lowrank_ggn.backends import BACKEND_NAMES, jit, library_by_name, namespace_by_name, to_numpy

DEFAULT_BACKENDS = ("numpy", "array_api_strict", "jax", "torch")
DTYPES = ("float32", "float64")
GAMMA = 0.1  # damping of the operators of the family
SIGMA_MAX = 10.0  # DampedLowRank problems: σ ~ U(0, 10), the smallest σ set to 0
ROWS = (
    ("fd_step", "FD, one step: ‖M̃ − shrink(core)‖₂ / λ₁(core)"),
    ("fd_step_rho", "FD, one step: \\|ρ − (αρ₀ + λ_{τ+1}(core))\\| / ρ"),
    ("fd_cert", "FD, stream: violation of 0 ⪯ M − M̃ ⪯ ρI, / ‖M‖₂"),
    ("fd_tight", "FD, stream: ‖M − M̃‖₂ / ρ (min–max, not an error)"),
    ("ginger_cert", "Ginger (eigen), stream: violation of 0 ⪯ M − M̃ ⪯ ρI, / ‖M‖₂"),
    ("ginger_tight", "Ginger (eigen), stream: ‖M − M̃‖₂ / ρ (min–max, not an error)"),
    ("sm_cert", "Ginger (Sherman–Morrison), stream: violation of 0 ⪯ M − M̃ ⪯ ρI, / ‖M‖₂"),
    ("nys_order", "Nyström: λ_max(M̂ − M)₊ / ‖M‖₂"),
    ("nys_exact", "Nyström, rank M = τ ≤ s: ‖M̂ − M‖₂ / ‖M‖₂"),
    ("gdiag", "Ginger + diagonal: max_i \\|G_ii − γ − M_ii\\| / (γ + M_ii)"),
    ("diag", "Diagonal: max_i \\|m_i − M_ii\\| / M_ii"),
)
OPERATOR_ROWS = (
    ("matvec", "matvec: max_j ‖y_j − G v_j‖ / ‖G v_j‖, y = matvec(v)"),
    ("solve", "solve: backward error max_j ‖Gy_j − g_j‖ / (‖G‖₂‖y_j‖ + ‖g_j‖)"),
    ("logdet", "logdet: \\|Δ log det G\\| (relative error of det G)"),
    ("sqrt", "sqrt_matvec: ‖L Lᵀ − G‖₂ / ‖G‖₂"),
    ("inv_sqrt", "inv_sqrt_matvec: ‖Lᵀ (L⁻ᵀ) − I‖₂, same L"),
    ("trace", "trace: relative"),
    ("odiag", "diag: max_i relative"),
    ("dense", "dense: ‖·‖₂ relative"),
    ("scipy", "to_scipy: matmat, as matvec"),
    ("lineax", "to_lineax (JAX only): mv, as matvec"),
)
for _kind in ("scalar", "vector"):
    ROWS += tuple((f"{_kind}_{key}", f"DampedLowRank, {_kind} D, {label}") for key, label in OPERATOR_ROWS)


class Backend:
    """One backend in one dtype: the library module, its namespace and the converters."""

    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype_name = name, dtype
        self.lib = library_by_name(name)
        if name == "torch":
            self.lib.set_num_threads(1)  # matrices of ~100 rows: extra threads only add (heavy, under load) overhead
        self.ns = namespace_by_name(name)
        self.dtype = getattr(self.ns, dtype)
        self.np_dtype = np.dtype(dtype)
        self._compiled: dict[Any, Callable[..., Any]] = {}

    def update(self, key: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` compiled once per ``key`` on JAX (eager dispatch is slow), ``fn`` itself elsewhere."""
        if key not in self._compiled:
            self._compiled[key] = jit(fn, self.ns)
        return self._compiled[key]

    def round(self, x: Any) -> np.ndarray:
        """``x`` rounded to this dtype, back in float64 (what the backend is given)."""
        return np.asarray(x, dtype=self.np_dtype).astype(np.float64)

    def put(self, x: Any) -> Any:
        return self.ns.asarray(np.asarray(x, dtype=self.np_dtype))

    @staticmethod
    def get(x: Any) -> np.ndarray:
        return np.asarray(to_numpy(x), dtype=np.float64)


# ----------------------------------------------------------------------------------------- references and helpers


def _stream(rng: np.random.Generator, dim: int, steps: int, low_rank: int | None = None) -> list[np.ndarray]:
    """Curvature vectors: full rank with a decaying scale, or inside a fixed ``low_rank``-dimensional subspace."""
    if low_rank is not None:
        basis = rng.standard_normal((dim, low_rank))
        return [basis @ rng.standard_normal(low_rank) for _ in range(steps)]
    scale = np.linspace(2.0, 0.1, dim)
    return [scale * rng.standard_normal(dim) for _ in range(steps)]


def _ema(ds: list[np.ndarray], decay: float) -> np.ndarray:
    m = np.zeros((ds[0].size, ds[0].size))
    for d in ds:
        m = decay * m + (1 - decay) * np.outer(d, d)
    return m


def _kept(b: Backend, basis: Any, eigvals: Any) -> np.ndarray:
    u, s = b.get(basis), b.get(eigvals)
    return (u * s) @ u.T


def _norm2(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2))


def _certificate(m: np.ndarray, kept: np.ndarray, rho: float) -> tuple[float, float]:
    """(violation of 0 ⪯ M − M̃ ⪯ ρI relative to ‖M‖₂, 0 when it holds; tightness ‖M − M̃‖₂ / ρ)."""
    ev = np.linalg.eigvalsh(m - kept)
    scale = float(np.linalg.eigvalsh(m)[-1])
    return max(-ev[0], ev[-1] - rho, 0.0) / scale, float(ev[-1]) / rho


def _cols_rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.linalg.norm(got - want, axis=0) / np.linalg.norm(want, axis=0)))


# ------------------------------------------------------------------------------------------------- measurements


def measure_family(b: Backend, rng: np.random.Generator, args: argparse.Namespace, out: dict[str, list]) -> None:
    """One random problem of each approximation; append each property's error to ``out``."""
    dim, rank, decay, steps = args.dim, args.rank, args.decay, args.steps
    ds = [b.round(d) for d in _stream(rng, dim, steps)]
    m = _ema(ds, decay)

    def run(approx: Any, vectors: list[np.ndarray]) -> Any:
        state = approx.init(dim, xp=b.lib, dtype=b.dtype)
        # Nyström's seed only draws Ω at init: one compiled update serves every seed.
        update = b.update(dataclasses.replace(approx, seed=0) if approx.name == "nystrom" else approx, approx.update)
        for d in vectors:
            state = update(state, b.put(d))
        return state

    # Frequent Directions: the last step against the dense (τ+1)-core shrink, then the certificate.
    fd = lg.frequent_directions(rank=rank, decay=decay)
    before = run(fd, ds[:-1])
    state = b.update(fd, fd.update)(before, b.put(ds[-1]))
    core = decay * _kept(b, before.basis, before.eigvals) + (1 - decay) * np.outer(ds[-1], ds[-1])
    lam, vec = np.linalg.eigh(core)
    lam, vec = lam[::-1], vec[:, ::-1]
    shrunk = (vec[:, :rank] * np.maximum(lam[:rank] - lam[rank], 0.0)) @ vec[:, :rank].T
    out["fd_step"].append(_norm2(_kept(b, state.basis, state.eigvals) - shrunk) / lam[0])
    rho_want = decay * float(b.get(before.escaped)) + lam[rank]
    out["fd_step_rho"].append(abs(float(b.get(state.escaped)) - rho_want) / rho_want)
    viol, tight = _certificate(m, _kept(b, state.basis, state.eigvals), float(b.get(state.escaped)))
    out["fd_cert"].append(viol)
    out["fd_tight"].append(tight)

    state = run(lg.ginger(rank=rank, decay=decay), ds)
    viol, tight = _certificate(m, _kept(b, state.basis, state.eigvals), float(b.get(state.escaped)))
    out["ginger_cert"].append(viol)
    out["ginger_tight"].append(tight)

    state = lg.ginger_init(dim, rank, xp=b.lib, dtype=b.dtype)
    update = b.update(
        ("sherman-morrison", rank, decay),
        lambda s, d: lg.ginger_update(s, d, decay=decay, damping=1.0, method="sherman-morrison"),
    )
    for d in ds:
        state = update(state, b.put(d))
    out["sm_cert"].append(_certificate(m, _kept(b, state.basis, state.eigvals), float(b.get(state.escaped)))[0])

    nys = lg.nystrom(rank=rank, decay=decay, sketch_size=2 * rank, seed=int(rng.integers(2**31)))
    op = nys.operator(run(nys, ds), damping=GAMMA)
    out["nys_order"].append(max(float(np.linalg.eigvalsh(_kept(b, op.basis, op.eigvals) - m)[-1]), 0.0) / _norm2(m))
    low = [b.round(d) for d in _stream(rng, dim, steps, low_rank=rank)]
    m_low = _ema(low, decay)
    op = nys.operator(run(nys, low), damping=GAMMA)
    out["nys_exact"].append(_norm2(_kept(b, op.basis, op.eigvals) - m_low) / _norm2(m_low))

    approx = lg.ginger_diagonal(rank=rank, decay=decay)
    want = GAMMA + np.diag(m)
    got = b.get(approx.operator(run(approx, ds), damping=GAMMA).diag())
    out["gdiag"].append(float(np.max(np.abs(got - want) / want)))

    got = b.get(run(lg.diagonal(decay=decay), ds).diagonal)
    out["diag"].append(float(np.max(np.abs(got - np.diag(m)) / np.diag(m))))


def measure_operator(b: Backend, rng: np.random.Generator, scale: float, args: argparse.Namespace, out: dict) -> None:
    """DampedLowRank on one random (U, σ, D), scalar and vector D, D scaled by ``scale``; append to ``out``."""
    dim, rank = args.dim, args.rank
    u, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    sigma = np.sort(rng.uniform(0, SIGMA_MAX, rank))[::-1]
    sigma[-1] = 0.0
    u, sigma = b.round(u), b.round(sigma)  # the reference is the operator the backend holds
    v = rng.standard_normal((dim, 4))
    v_b = b.round(v)
    eye = np.eye(dim)
    for kind in ("scalar", "vector"):
        if kind == "scalar":
            diag = float(b.round(0.7 * scale))
            op = lg.DampedLowRank(diagonal=diag, basis=b.put(u), eigvals=b.put(sigma))
            d_vec = np.full(dim, diag)
        else:
            d_vec = b.round(rng.uniform(0.1, 2.0, dim) * scale)
            op = lg.DampedLowRank(diagonal=b.put(d_vec), basis=b.put(u), eigvals=b.put(sigma))
        dense = np.diag(d_vec) + (u * sigma) @ u.T
        norm = _norm2(dense)
        e: dict[str, float] = {}
        e["matvec"] = _cols_rel(b.get(op.matvec(b.put(v_b))), dense @ v_b)
        y = b.get(op.solve(b.put(v_b)))
        res = np.linalg.norm(dense @ y - v_b, axis=0)
        e["solve"] = float(np.max(res / (norm * np.linalg.norm(y, axis=0) + np.linalg.norm(v_b, axis=0))))
        # Determinant lemma on a small well-conditioned matrix (slogdet of G itself is off by cond · eps).
        small = np.eye(rank) + np.sqrt(sigma)[:, None] * ((u.T / d_vec) @ u) * np.sqrt(sigma)[None, :]
        e["logdet"] = abs(float(b.get(op.logdet())) - (np.sum(np.log(d_vec)) + np.linalg.slogdet(small)[1]))
        low = b.get(op.sqrt_matvec(b.put(eye)))
        e["sqrt"] = _norm2(low @ low.T - dense) / norm
        e["inv_sqrt"] = _norm2(low.T @ b.get(op.inv_sqrt_matvec(b.put(eye))) - eye)
        want = float(np.trace(dense))
        e["trace"] = abs(float(b.get(op.trace())) - want) / want
        e["odiag"] = float(np.max(np.abs(b.get(op.diag()) - np.diag(dense)) / np.diag(dense)))
        e["dense"] = _norm2(b.get(op.dense()) - dense) / norm
        e["scipy"] = _cols_rel(
            np.asarray(op.to_scipy() @ np.asarray(v_b, dtype=b.np_dtype), dtype=np.float64), dense @ v_b
        )
        if b.name == "jax":
            lop = op.to_lineax()
            got = np.stack([b.get(lop.mv(b.put(v_b[:, j]))) for j in range(v_b.shape[1])], axis=1)
            e["lineax"] = _cols_rel(got, dense @ v_b)
        for key, value in e.items():
            out[f"{kind}_{key}"].append(value)


def _cell(key: str, values: list[float]) -> str:
    if not values:
        return "—"
    if key.endswith("_tight"):
        return f"{min(values):.3f}–{max(values):.3f}"
    worst = max(values)
    if not np.isfinite(worst):
        return "**non-finite**"
    return "0" if worst == 0 else f"{worst:.1e}"


def table(args: argparse.Namespace, backends: list[str]) -> str:
    """Measure every backend × dtype; return the markdown table."""
    columns: list[tuple[str, dict[str, list[float]]]] = []
    for name in backends:
        for dtype in DTYPES:
            b = Backend(name, dtype)
            out: dict[str, list[float]] = {key: [] for key, _ in ROWS}
            rng = np.random.default_rng(args.seed)  # the same problems in every column
            start = time.perf_counter()
            for k in range(args.problems):
                measure_family(b, rng, args, out)
                measure_operator(b, rng, 10.0 ** (-3 * k / max(args.problems - 1, 1)), args, out)
            print(f"  {name}/{dtype}: {time.perf_counter() - start:.1f} s", flush=True)
            columns.append((f"{name}/{dtype}", out))
    header = "| property | " + " | ".join(c for c, _ in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(key, out[key]) for _, out in columns) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- the stream mode (ρ)


def stream_tightness(args: argparse.Namespace, stream: Any) -> None:
    """Tightness ‖M − M̃‖₂ / ρ of Ginger and FD on a real stream (NumPy float64)."""
    methods = {
        "ginger": lg.ginger(rank=args.rank, decay=args.decay),
        "fd": lg.frequent_directions(rank=args.rank, decay=args.decay),
    }
    states: dict[str, Any] = {}
    m = None
    print(f"stream={args.stream} rank={args.rank} decay={args.decay}")
    print("| step | method | ‖M − M̃‖₂ | ρ | ‖M − M̃‖₂/ρ | λ_min(M − M̃) |")
    print("|---|---|---|---|---|---|")
    checkpoints = {args.steps // 4, args.steps // 2, args.steps}
    for item in stream:
        d = item.curvature
        if m is None:
            m = np.zeros((d.size, d.size))
            states = {k: a.init(d.size) for k, a in methods.items()}
        m = args.decay * m + (1 - args.decay) * np.outer(d, d)
        states = {k: methods[k].update(s, d) for k, s in states.items()}
        t = item.step + 1
        if t in checkpoints:
            for k, s in states.items():
                ev = np.linalg.eigvalsh(m - (s.basis * s.eigvals) @ s.basis.T)
                rho = float(s.escaped)
                ratio = f"{ev[-1] / rho:.3f}" if rho > 0 else "— (nothing dropped yet)"
                print(f"| {t} | {k} | {ev[-1]:.4g} | {rho:.4g} | {ratio} | {ev[0]:.2g} |")


# ------------------------------------------------------------------------------------------------------- CLI


def _positive(kind: Callable[[str], Any], low: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value >= low:
            msg = f"must be at least {low}, got {text}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _decay(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        msg = f"must be in (0, 1), got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS), help="comma-separated backend names")
    parser.add_argument("--dim", type=_positive(int, 4), default=100)
    parser.add_argument("--rank", type=_positive(int, 2), default=8)
    parser.add_argument("--decay", type=_decay, default=None, help="default 0.9 (table) or 0.95 (--stream)")
    parser.add_argument("--steps", type=_positive(int, 2), default=None, help="default 30 (table) or 300 (--stream)")
    parser.add_argument("--problems", type=_positive(int, 1), default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    parser.add_argument("--stream", default=None, help="instead: ρ's tightness on this stream (e.g. digits-mlp)")
    args = parser.parse_args()
    if args.stream is not None:
        args.decay = 0.95 if args.decay is None else args.decay
        args.steps = 300 if args.steps is None else args.steps
        from lowrank_ggn.studies import make_stream

        try:
            stream = make_stream(args.stream, steps=args.steps, seed=args.seed)
        except ValueError as exc:
            parser.error(f"--stream: {exc}")
        stream_tightness(args, stream)
        return
    args.decay = 0.9 if args.decay is None else args.decay
    args.steps = 30 if args.steps is None else args.steps
    backends = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = sorted(set(backends) - set(BACKEND_NAMES))
    if unknown or not backends:
        parser.error(f"--backends must name some of {BACKEND_NAMES}, got {args.backends!r}")
    if args.dim < 2 * args.rank:
        parser.error(f"--dim must be at least 2 * --rank = {2 * args.rank} (Nyström's sketch), got {args.dim}")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out: directory {args.out.parent} does not exist")
    for name in backends:
        try:
            library_by_name(name)
        except ValueError as exc:
            parser.error(f"--backends: {exc}")
    scales = ", ".join(f"{10.0 ** (-3 * k / max(args.problems - 1, 1)):g}" for k in range(args.problems))
    settings = (
        f"seed={args.seed}, {args.problems} problems per column; dim={args.dim}, rank τ={args.rank}, "
        f"decay α={args.decay}, {args.steps} steps, Nyström sketch s=2τ, damping γ={GAMMA}; DampedLowRank: "
        f"σ ~ U(0, {SIGMA_MAX:g}) with σ_τ = 0, scalar D = 0.7·c, vector D ~ U(0.1, 2)·c, c ∈ {{{scales}}}"
    )
    print(settings, flush=True)
    text = table(args, backends)
    print(text)
    if args.out is not None:
        args.out.write_text(settings + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
