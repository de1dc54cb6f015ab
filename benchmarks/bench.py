"""Benchmark Ginger and QNG against the memory-traffic floor, an Adam step and a copy of U.

Usage (from the repository root)::

    python benchmarks/bench.py --quick                 # a few minutes
    python benchmarks/bench.py                         # the full table (an hour or more on 1 core)
    python benchmarks/bench.py --lib /path/to/other/checkout --label before

For every backend (NumPy, JAX under ``jax.jit``, PyTorch), dtype, dimension d
and rank τ it measures, in interleaved rounds (the minimum over rounds is kept
for every quantity, so that ratios are robust to other processes on the
machine):

* ``copy``: a copy of a d×τ array into an already-touched buffer. Its time
  gives the copy bandwidth ``B = 2·bytes(U)/t_copy`` (one read and one write);
* ``copy (fresh)``: the same copy into a new allocation (page faults included);
* ``adam``: the backend's own Adam step on d parameters;
* Ginger's update, query, update then query, the fused update-and-query (pure
  and with buffer donation), the product form, and QNG's update and query;
* ``*.near.donated``: the donated fused step and product form fed directions
  nine tenths of whose squared norm lies in the span of the current basis
  (``d = f + 3·√d·U a`` with a fresh ``f`` and a unit ``a``): the
  re-orthogonalising (CGS2) path that steps take when ``d`` is nearly in
  ``span U``, which the fresh (nearly orthogonal) directions never reach;
* ``rotate.gemm``: the backend's own matrix product ``U·R`` (R of size τ×τ)
  alone, into a buffer allocated beforehand — what rotating U costs with the
  backend's GEMM. Its memory floor is two passes; more means the product is
  bound by arithmetic (or by the GEMM's efficiency on a d×τ by τ×τ shape);
* ``rotate.flop-floor`` (modelled, not timed): the rotation's 2dτ² flops at
  the rate of the backend's product of two 1024×1024 matrices measured in the
  same run, as passes over U — the arithmetic floor of any step that rotates U
  with a dense τ×τ matrix on that backend and thread count.

Every time is reported as **passes over U** = ``t · B / bytes(U)`` (reading U
once is one pass, a copy is two) and as a **ratio to the Adam step**; peak
memory is reported relative to ``bytes(U)``. Results go to ``<out>/results.csv``
and ``<out>/results.md``; ``benchmarks/report.py`` turns one or two result files
(before/after) into tables, plots and the documentation page.
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _limit_threads(argv: list[str]) -> int:
    """Fix every library's thread count from ``--threads`` before NumPy loads its BLAS."""
    n = 1
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif arg.startswith("--threads="):
            n = int(arg.split("=", 1)[1])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    return n


if __name__ == "__main__":
    _limit_threads(sys.argv)

import numpy as np  # noqa: E402 - after the thread limits

HERE = Path(__file__).resolve().parent
DECAY, DAMPING = 0.95, 1e-3

FIELDS = [
    "label",
    "backend",
    "device",
    "dtype",
    "dim",
    "rank",
    "op",
    "seconds",
    "passes",
    "adam_ratio",
    "peak_rel",
    "memory_method",
    "copy_gbps",
    "adam_seconds",
    "copy_seconds",
    "rounds",
    "calls",
    "note",
]


@dataclass(eq=False)
class Op:
    """One measured operation: ``step(carry, d, g) -> carry`` after ``setup() -> carry``."""

    name: str
    setup: Callable[[], Any]
    step: Callable[[Any, Any, Any], Any]
    cycle: int = 1  # calls per sample unit (the product form: steps between two compressions)
    memory: Callable[[Any, Any, Any], int | None] | None = None
    state_rel: float = 1.0  # bytes of the op's state relative to bytes(U), for the memory budget
    donated: bool = False
    direction: Callable[[Any], Any] | None = None  # carry -> d (untimed); None: a fresh direction
    carry: Any = None
    samples: list[float] = field(default_factory=list)
    calls: int = 0


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="float32, d ∈ {1e5, 1e6}, τ ∈ {4, 16, 64}, 3 rounds")
    p.add_argument("--backends", default="numpy,jax,torch", help="comma-separated: numpy,jax,torch,cupy")
    p.add_argument("--dtypes", default=None, help="comma-separated: float32,float64")
    p.add_argument("--dims", default=None, help="comma-separated dimensions (default 1e4,1e5,1e6,1e7)")
    p.add_argument("--ranks", default=None, help="comma-separated ranks (default 1,4,16,64)")
    p.add_argument("--ops", default=None, help="comma-separated op names to run (default: all available)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; 3 with --quick)")
    p.add_argument("--min-sample", type=float, default=0.01, help="seconds of work per sample (default 0.01)")
    p.add_argument("--threads", type=int, default=1, help="BLAS/XLA/torch threads (default 1)")
    p.add_argument("--device", default=None, help="device for JAX/torch (e.g. gpu, cuda)")
    p.add_argument("--lib", default=None, help="import lowrank_ggn from this directory (default: this checkout)")
    p.add_argument("--label", default="after", help="label stored in every row (e.g. before/after)")
    p.add_argument("--out", default=str(HERE / "results"), help="output directory")
    p.add_argument("--memory-fraction", type=float, default=0.7, help="skip cases needing more of MemAvailable")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per (backend, dtype, d, τ) case")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    args = p.parse_args()
    if args.quick:
        args.dtypes = args.dtypes or "float32"
        args.dims = args.dims or "100000,1000000"
        args.ranks = args.ranks or "4,16,64"
        args.rounds = args.rounds or 3
    args.dtypes = (args.dtypes or "float32,float64").split(",")
    args.dims = [int(float(x)) for x in (args.dims or "1e4,1e5,1e6,1e7").split(",")]
    args.ranks = [int(x) for x in (args.ranks or "1,4,16,64").split(",")]
    args.rounds = args.rounds or 5
    args.backends = args.backends.split(",")
    args.ops = None if args.ops is None else set(args.ops.split(","))
    return args


def _orthonormal(d: int, rank: int, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """A d×rank matrix with orthonormal columns of disjoint support (cheap at any d)."""
    u = np.zeros((d, rank), dtype=dtype)
    owner = np.arange(d) % rank
    signs = rng.choice(np.array([-1.0, 1.0], dtype=dtype), size=d)
    counts = np.bincount(owner, minlength=rank).astype(dtype)
    u[np.arange(d), owner] = signs / np.sqrt(counts[owner])
    return u


class Case:
    """The operations measured for one (backend, dtype, d, τ)."""

    def __init__(self, lg: Any, ad: Any, dim: int, rank: int, args: argparse.Namespace) -> None:
        self.lg, self.ad, self.dim, self.rank, self.args = lg, ad, dim, rank, args
        rng = np.random.default_rng(dim * 1000 + rank)
        self.base = ad.asarray(rng.standard_normal(dim))
        self.g = ad.asarray(rng.standard_normal(dim))
        self.shift_rng = np.random.default_rng(7)
        self.eigvals_np = np.sort(rng.uniform(0.5, 2.0, rank)).astype(ad.dtype)[::-1].copy()
        self.bytes_u = dim * rank * ad.dtype.itemsize

    def fresh_d(self) -> Any:
        """A new direction: the base vector rolled by a random shift (untimed)."""
        return self.ad.sync(self.ad.roll(self.base, int(self.shift_rng.integers(1, self.dim))))

    def near_d(self, carry: Any) -> Any:
        """A fresh direction plus ``3·√d`` times a unit combination of the state's basis (untimed).

        Nine tenths of its squared norm lie in ``span U``: the CGS2 path.
        """
        ad, xp = self.ad, self.ad.module
        if hasattr(carry, "basis"):
            basis, n = carry.basis, carry.basis.shape[1]
            live = n
        else:  # product form: the live rows of the buffer Wᵀ
            basis, n = carry.columns.T, carry.columns.shape[0]
            live = int(carry.count)
        a = np.zeros(n)
        a[:live] = np.random.default_rng(int(self.shift_rng.integers(2**31))).standard_normal(live)
        a *= 3 * math.sqrt(self.dim) / np.linalg.norm(a)
        inside = xp.matmul(basis, ad.asarray(a))
        return ad.sync(self.fresh_d() + inside)

    def ginger_state(self) -> Any:
        """A direct-form state with an orthonormal basis and σ ∈ [0.5, 2] (no warm-up needed)."""
        lg, ad = self.lg, self.ad
        xp = ad.module
        s = lg.ginger_init(2, 1, xp=xp, dtype=getattr(xp, str(ad.dtype)))
        basis = ad.asarray(_orthonormal(self.dim, self.rank, ad.dtype, np.random.default_rng(self.dim)))
        return ad.sync(s._replace(basis=basis, eigvals=ad.asarray(self.eigvals_np)))

    def qng_state(self) -> Any:
        lg, ad = self.lg, self.ad
        xp = ad.module
        q = lg.qng_init(self.dim, self.rank, xp=xp, dtype=getattr(xp, str(ad.dtype)))
        upd = ad.jit(lambda q, d: lg.qng_update(q, d, decay=DECAY))
        for _ in range(self.rank):
            q = upd(q, self.fresh_d())
        return ad.sync(q)

    def product_state(self) -> Any:
        return self.ad.sync(self.lg.ginger_product_from_state(self.ginger_state()))

    def ops(self) -> list[Op]:
        """Every operation available in this version of the library (pure ones do not carry state)."""
        lg, ad = self.lg, self.ad
        kw_u, kw_q = {"decay": DECAY}, {"damping": DAMPING}
        ops: list[Op] = []

        upd = ad.jit(lambda s, d: lg.ginger_update(s, d, **kw_u))
        qry = ad.jit(lambda s, g: lg.ginger_precondition(s, g, **kw_q))

        def upd_then_query(s: Any, d: Any) -> Any:
            s = upd(s, d)
            return s, qry(s, self.g)

        ops.append(self._op("ginger.update", self.ginger_state, upd, state_rel=1, carry=False))
        ops.append(self._op("ginger.query", self.ginger_state, qry, state_rel=1, carry=False, query=True))
        ops.append(self._op("ginger.update+query", self.ginger_state, upd_then_query, state_rel=1, carry=False))
        if hasattr(lg, "ginger_update_precondition"):
            fused = ad.jit(lambda s, d, g: lg.ginger_update_precondition(s, d, g, **kw_u, **kw_q))
            ops.append(self._op("ginger.fused", self.ginger_state, fused, state_rel=1, carry=False, fused=True))
            fused_d = self._donating(lambda s, d, g, **kw: lg.ginger_update_precondition(s, d, g, **kw_u, **kw_q, **kw))
            donated = self._op("ginger.fused.donated", self.ginger_state, fused_d, state_rel=1, carry=True, fused=True)
            ops.append(donated)
            ops.append(
                self._op(
                    "ginger.fused.near.donated",
                    self.ginger_state,
                    fused_d,
                    state_rel=1,
                    carry=True,
                    fused=True,
                    direction=self.near_d,
                )
            )
            ops.append(self._gemm_op(fused_d))
        if hasattr(lg, "ginger_product_init"):
            kw = {**kw_u, **kw_q}
            cap = int(self.product_state().columns.shape[0])
            fused = ad.jit(lambda s, d, g: lg.ginger_product_update_precondition(s, d, g, **kw))
            fused_d = self._donating(lambda s, d, g, **k: lg.ginger_product_update_precondition(s, d, g, **kw, **k))
            rel = cap / self.rank
            cycle = cap - self.rank
            ops.append(self._op("product.fused", self.product_state, fused, rel, carry=True, fused=True, cycle=cycle))
            ops.append(
                self._op("product.fused.donated", self.product_state, fused_d, rel, carry=True, fused=True, cycle=cycle)
            )
            ops.append(
                self._op(
                    "product.fused.near.donated",
                    self.product_state,
                    fused_d,
                    rel,
                    carry=True,
                    fused=True,
                    cycle=cycle,
                    direction=self.near_d,
                )
            )
        qupd = ad.jit(lambda q, d: lg.qng_update(q, d, **kw_u))
        qqry = ad.jit(lg.qng_precondition)

        def qng_both(q: Any, d: Any) -> Any:
            q = qupd(q, d)
            return q, qqry(q, self.g)

        ops.append(self._op("qng.update", self.qng_state, qupd, state_rel=1, carry=False))
        ops.append(self._op("qng.query", self.qng_state, qqry, state_rel=1, carry=False, query=True))
        ops.append(self._op("qng.update+query", self.qng_state, qng_both, state_rel=1, carry=False))
        if self.args.ops is not None:
            ops = [o for o in ops if o.name in self.args.ops]
        return ops

    def _gemm_op(self, fused_donated: Callable[..., Any]) -> Op:
        """The backend's own product ``U·R`` (R τ×τ) alone: what rotating U costs with its matrix product.

        U is taken in the layout the donated fused step keeps it in (column-major on
        NumPy and PyTorch, row-major on JAX) and the product written into a buffer
        allocated beforehand (JAX: a jitted product into a donated buffer). Its memory floor is two passes
        (one read of U, one write); where it measures more, the step is bounded by
        the product's arithmetic, not by memory traffic.
        """
        ad, rank = self.ad, self.rank

        def setup() -> Any:
            state = fused_donated(self.ginger_state(), self.fresh_d(), self.g)[0]
            q, _ = np.linalg.qr(np.random.default_rng(rank).standard_normal((rank, rank)))
            return ad.sync(state.basis), ad.asarray(q), ad.empty_like(state.basis)

        if ad.name == "jax":
            # The output buffer is donated, so that XLA writes into it (as the donated step does).
            # keep_unused: an unused argument would be pruned, and its buffer not donated.
            product = ad.jax.jit(lambda u, r, out: u @ r, donate_argnums=2, keep_unused=True)  # noqa: ARG005

            def step(c: Any, _d: Any, _g: Any) -> Any:
                return c[0], c[1], ad.sync(product(c[0], c[1], c[2]))
        else:
            matmul = ad.module.matmul

            def step(c: Any, _d: Any, _g: Any) -> Any:
                ad.sync(matmul(c[0], c[1], out=c[2]))
                return c

        return Op("rotate.gemm", setup, step, state_rel=2.0)

    def _donating(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """JAX: jit with the state donated; NumPy/PyTorch: the library's ``donate=True``."""
        if self.ad.name == "jax":
            return self.ad.jit(fn, donate=(0,))
        return lambda s, d, g: fn(s, d, g, donate=True)

    def _op(
        self,
        name: str,
        setup: Callable[[], Any],
        fn: Callable[..., Any],
        state_rel: float,
        *,
        carry: bool,
        fused: bool = False,
        query: bool = False,
        cycle: int = 1,
        direction: Callable[[Any], Any] | None = None,
    ) -> Op:
        """Wrap ``fn`` as an Op; ``carry``: feed the new state back (donated or product form)."""
        ad, g = self.ad, self.g

        def call(s: Any, d: Any) -> Any:
            if fused:
                return fn(s, d, g)
            return fn(s, g) if query else fn(s, d)

        def step(s: Any, d: Any, _g: Any) -> Any:
            out = ad.sync(call(s, d))
            if not carry:
                return s
            return out[0] if fused else out

        def memory(s: Any, d: Any, g: Any) -> int | None:
            if ad.name == "jax":
                args = (s, d, g) if fused else ((s, g) if query else (s, d))
                return ad.memory_of(fn, *args)
            return ad.peak(lambda: call(s, d))

        return Op(
            name,
            setup,
            step,
            cycle=cycle,
            memory=memory,
            state_rel=state_rel,
            donated=name.endswith("donated"),
            direction=direction,
        )


def _time_op(ad: Any, op: Op, case: Case, reps: int) -> float:
    """Run ``reps × cycle`` calls, each timed alone with a fresh direction; return seconds per call."""
    total = 0.0
    n = reps * op.cycle
    for _ in range(n):
        d = case.fresh_d() if op.direction is None else op.direction(op.carry)
        with ad.timer() as t:
            op.carry = op.step(op.carry, d, case.g)
        total += t.seconds
    op.calls += n
    return total / n


def _row(label: str, ad: Any, case: Case, name: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(FIELDS, "")
    row.update(
        label=label,
        backend=ad.name,
        device=str(getattr(ad, "device", None) or "cpu"),
        dtype=str(ad.dtype),
        dim=case.dim,
        rank=case.rank,
        op=name,
    )
    row.update(values)
    return row


def measure_op(ad: Any, case: Case, op: Op, args: argparse.Namespace, label: str) -> list[dict[str, Any]]:  # noqa: C901
    """Measure one op interleaved with a copy of U and an Adam step; return its row and the two references."""
    deadline = time.monotonic() + args.timeout
    bytes_u = case.bytes_u
    op.carry = op.setup()
    src = case.ginger_state().basis
    dst = ad.empty_like(src)
    adam = ad.adam(case.dim)

    def copy_step(carry: Any, _d: Any, _g: Any) -> Any:
        return ad.copy_warm(src, carry)

    def fresh_step(carry: Any, _d: Any, _g: Any) -> Any:
        ad.sync(ad.copy_fresh(carry))
        return carry

    def adam_step(carry: Any, _d: Any, g: Any) -> Any:
        adam(g)
        return carry

    copy = Op("copy", lambda: dst, copy_step)
    fresh = Op("copy.fresh", lambda: None, fresh_step)
    adam_op = Op("adam", lambda: None, adam_step)
    group = [copy, fresh, adam_op, op]
    reps: dict[str, int] = {}
    for o in group:  # warm-up (compilation on JAX) and calibration, untimed
        if o is copy:
            o.carry = dst
        elif o is fresh:
            o.carry = src
        # Two warm-up calls (JAX may compile again for the state its first call
        # returns); the second one calibrates the number of calls per sample.
        o.carry = o.step(o.carry, case.fresh_d(), case.g)
        d = case.fresh_d() if o.direction is None else o.direction(o.carry)
        t0 = time.perf_counter()
        o.carry = o.step(o.carry, d, case.g)
        per_call = max(time.perf_counter() - t0, 1e-7)
        reps[o.name] = max(1, min(64, math.ceil(args.min_sample / (per_call * o.cycle))))
    note = ""
    for _ in range(args.rounds):
        for o in group:
            o.samples.append(_time_op(ad, o, case, reps[o.name]))
        if time.monotonic() > deadline:
            note = f"timeout after {len(op.samples)} rounds"
            break
    t_copy, t_fresh, t_adam = (min(o.samples) for o in group[:3])
    bandwidth = 2 * bytes_u / t_copy
    peak = None
    if op.memory is not None and not args.no_memory:
        gc.collect()
        try:
            peak = op.memory(op.carry, case.fresh_d(), case.g)
        except Exception as err:  # noqa: BLE001 - a failed measurement must not stop the table
            print(f"    memory of {op.name} failed: {err!r}", file=sys.stderr)
    t = min(op.samples)
    common = {
        "copy_gbps": f"{bandwidth / 1e9:.2f}",
        "adam_seconds": f"{t_adam:.6g}",
        "copy_seconds": f"{t_copy:.6g}",
        "rounds": len(op.samples),
        "note": note,
    }
    rows = [
        _row(
            label,
            ad,
            case,
            op.name,
            seconds=f"{t:.6g}",
            passes=f"{t * bandwidth / bytes_u:.3f}",
            adam_ratio=f"{t / t_adam:.3f}",
            peak_rel="" if peak is None else f"{peak / bytes_u:.3f}",
            memory_method="" if peak is None else ad.memory_method,
            calls=op.calls,
            **common,
        ),
        _row(
            label,
            ad,
            case,
            "copy.fresh",
            seconds=f"{t_fresh:.6g}",
            passes=f"{t_fresh * bandwidth / bytes_u:.3f}",
            adam_ratio=f"{t_fresh / t_adam:.3f}",
            **common,
        ),
        _row(
            label,
            ad,
            case,
            "adam",
            seconds=f"{t_adam:.6g}",
            passes=f"{t_adam * bandwidth / bytes_u:.3f}",
            adam_ratio="1.000",
            **common,
        ),
    ]
    for o in group:
        o.carry = None
    return rows


def measure_case(
    lg: Any,
    ad: Any,
    dim: int,
    rank: int,
    args: argparse.Namespace,
    label: str,
    peaks: dict[tuple[Any, ...], float],
    rates: dict[tuple[str, str], float],
) -> list[dict[str, Any]]:
    """Every op for one (backend, dtype, d, τ); one interleaved group per op, so that memory stays bounded."""
    case = Case(lg, ad, dim, rank, args)
    rows: list[dict[str, Any]] = []
    refs: dict[str, list[dict[str, Any]]] = {"copy.fresh": [], "adam": []}
    for op in case.ops():
        # Memory budget: the op's state(s), the copy buffers, and its peak measured at the previous d.
        extra = peaks.get((ad.name, str(ad.dtype), rank, op.name), 2.0 if op.donated else 6.0)
        need = (op.state_rel * (1 if op.donated else 2) + 2 + extra) * case.bytes_u + 16 * dim * ad.dtype.itemsize
        avail = ad.available_memory()
        if avail is not None and need > args.memory_fraction * avail:
            note = f"skipped: needs ~{need / 2**30:.1f} GiB of {avail / 2**30:.1f} GiB available"
            rows.append(_row(label, ad, case, op.name, note=note))
            print(f"    {op.name}: {note}")
            continue
        try:
            got = measure_op(ad, case, op, args, label)
        except MemoryError:
            rows.append(_row(label, ad, case, op.name, note="skipped: out of memory"))
            continue
        gc.collect()
        rows.append(got[0])
        refs["copy.fresh"].append(got[1])
        refs["adam"].append(got[2])
        if got[0]["peak_rel"]:
            peaks[ad.name, str(ad.dtype), rank, op.name] = float(got[0]["peak_rel"])
    # The reference rows: the fastest over all groups.
    rows.extend(min(found, key=lambda r: float(r["seconds"])) for found in refs.values() if found)
    measured = [r for r in rows if r.get("copy_gbps")]
    if measured and (args.ops is None or "rotate.flop-floor" in args.ops):
        rows.append(_flop_floor_row(label, ad, case, measured, rates))
    return rows


def _gemm_rate(ad: Any, n: int = 1024, rounds: int = 5) -> float:
    """Flops per second of the backend's product of two n×n matrices (its best case), best of ``rounds``."""
    a = ad.asarray(np.random.default_rng(0).standard_normal((n, n)))
    product = ad.jit(lambda x, y: x @ y)
    ad.sync(product(a, a))
    best = math.inf
    for _ in range(rounds):
        with ad.timer() as t:
            ad.sync(product(a, a))
        best = min(best, t.seconds)
    return 2 * n**3 / best


def _flop_floor_row(
    label: str, ad: Any, case: Case, measured: list[dict[str, Any]], rates: dict[tuple[str, str], float]
) -> dict[str, Any]:
    """The rotation's arithmetic as passes over U: 2dτ² flops at the backend's square-GEMM rate (modelled).

    The rate is measured once per backend and dtype in this run; the copy
    bandwidth is the best seen in this case. A step that rotates U with a dense
    τ×τ matrix cannot take fewer passes than this on the backend's GEMM.
    """
    key = (ad.name, str(ad.dtype))
    if key not in rates:
        rates[key] = _gemm_rate(ad)
    bandwidth = max(float(r["copy_gbps"]) for r in measured) * 1e9
    seconds = 2 * case.dim * case.rank**2 / rates[key]
    t_adam = min(float(r["adam_seconds"]) for r in measured)
    return _row(
        label,
        ad,
        case,
        "rotate.flop-floor",
        seconds=f"{seconds:.6g}",
        passes=f"{seconds * bandwidth / case.bytes_u:.3f}",
        adam_ratio=f"{seconds / t_adam:.3f}",
        note=f"modelled: 2dτ² flops at the square-GEMM rate measured in this run ({rates[key] / 1e9:.0f} GFLOP/s)",
    )


def _skip_row(label: str, backend: str, dtype: str, dim: int, rank: int, note: str) -> dict[str, Any]:
    row = dict.fromkeys(FIELDS, "")
    row.update(label=label, backend=backend, dtype=dtype, dim=dim, rank=rank, op="*", note=note)
    return row


def _write(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def _markdown(rows: list[dict[str, Any]]) -> str:
    # Ratios only: passes over U (= 2 × time / time of a copy of U), ×Adam and peak/U.
    lines = ["| backend | dtype | d | τ | op | passes | ×copy | ×Adam | peak/U |", "|---" * 9 + "|"]
    lines += [
        f"| {r['backend']} | {r['dtype']} | {r['dim']:.0e} | {r['rank']} | {r['op']} | {r['passes']} | "
        f"{float(r['passes']) / 2:.3f} | {r['adam_ratio']} | {r['peak_rel']} |"
        if r["passes"]
        else f"| {r['backend']} | {r['dtype']} | {r['dim']:.0e} | {r['rank']} | {r['op']} | | | | {r['note']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = _parse()
    sys.path.insert(0, str(Path(args.lib).resolve() if args.lib else HERE.parent))
    import lowrank_ggn as lg

    sys.path.insert(0, str(HERE))
    from _adapters import make_adapter

    out = Path(args.out)
    print(f"lowrank_ggn from {Path(lg.__file__).parent}; label={args.label}; threads={args.threads}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    rows: list[dict[str, Any]] = []
    for backend in args.backends:
        for dtype in args.dtypes:
            try:
                ad = make_adapter(backend, dtype, args.device)
                if backend == "torch" and not getattr(ad, "cuda", False):
                    ad.torch.set_num_threads(args.threads)
            except (ImportError, RuntimeError) as err:
                rows.append(_skip_row(args.label, backend, dtype, 0, 0, f"backend unavailable: {err}"))
                continue
            peaks: dict[tuple[Any, ...], float] = {}
            rates: dict[tuple[str, str], float] = {}
            for dim in args.dims:
                for rank in args.ranks:
                    if rank >= dim:
                        continue
                    t0 = time.perf_counter()
                    case_rows = measure_case(lg, ad, dim, rank, args, args.label, peaks, rates)
                    rows += case_rows
                    _write(rows, out)
                    summary = ", ".join(f"{r['op']}={r['passes']}" for r in case_rows if r["passes"])
                    print(f"{backend} {dtype} d={dim:.0e} τ={rank} ({time.perf_counter() - t0:.0f}s): {summary}")
                    sys.stdout.flush()
    _write(rows, out)
    (out / "results.md").write_text(_markdown(rows))
    print(f"wrote {out / 'results.csv'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
