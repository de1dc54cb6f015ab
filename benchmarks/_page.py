"""The documentation page of the benchmark results (written by ``report.py --page``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

INTRO = """\
# Benchmark results

What a Ginger step costs, measured against the memory-traffic floor, against a
copy of the basis and against an Adam step on the same backend. The numbers on
this page come from `benchmarks/bench.py`; the page itself from
`benchmarks/report.py`. Reproduce them with the commands at the end.

## What is measured

* **Passes over U** — `t × B / bytes(U)`, where `bytes(U) = d·τ·itemsize` and
  `B = 2·bytes(U) / t_copy` is the bandwidth of a copy of a d×τ array into an
  already-touched buffer, measured in the same run (a copy reads U once and
  writes it once: two passes). Reading U once is one pass. An update must read
  U for the reductions `Uᵀ[d, g]` and read and write it for the rotation, so
  **about 3 passes is the floor** for update + query (the query of the new
  state can reuse `Uᵀg`), plus the vectors d, g and y (3/τ passes).
* **×Adam** — time relative to the backend's own Adam step on d parameters
  (NumPy: in-place ufuncs; JAX: `optax.adam` under `jax.jit` with donated
  state; PyTorch: `torch.optim.Adam(fused=True)`), measured in the same run.
* **Peak memory / U** — memory allocated during one call beyond what was
  allocated before it, relative to `bytes(U)`: `tracemalloc` on NumPy, XLA's
  compiled memory analysis on JAX (outputs not aliased to donated inputs plus
  temporaries), the process's RSS high-water mark on PyTorch (CPU). A pure
  update allocates its new basis, so 1.0 is the least a pure call can show.
* **Robustness to a shared machine** — every operation is timed in its own
  group, interleaved round by round with the copy and the Adam step; the
  minimum over the rounds is kept for every quantity. Every call gets a new
  curvature direction (the base vector rolled by a random shift), so the
  measured path is the one-pass path of a vector far from span U — except in
  the two "d near span U" columns, whose directions put nine tenths of their
  squared norm inside the span of the current basis (`d = f + 3·√d·U a`, `f`
  fresh, `a` a random unit vector), which takes the re-orthogonalising (CGS2)
  path.

The variants:

| column | call |
|---|---|
| update | `ginger_update(state, d, decay=α)` |
| query | `ginger_precondition(state, g, damping=γ)` |
| update, then query | the two calls above, in sequence (the paper's loop) |
| fused | `ginger_update_precondition(state, d, g, decay=α, damping=γ)` |
| fused, donated | the same with `donate=True` (NumPy, PyTorch) or under `jax.jit(..., donate_argnums=0)` |
| product | `ginger_product_update_precondition` (U = WQ, default capacity 2τ), averaged over a compression cycle |
| product, donated | the same, donating the state |
| fused, donated, d near span U | fused, donated, with directions nearly in span U (the CGS2 path) |
| product, donated, d near span U | product, donated, with directions nearly in span W |
| QNG update+query | `qng_update` then `qng_precondition` |
| U·R alone (GEMM) | `U @ R` (R τ×τ) into a buffer allocated beforehand (memory floor: 2 passes) |
| flops of U·R at peak (modelled) | not timed: 2dτ² flops at the rate of a 1024×1024 product measured in the same run |

The last two are references for the rotation, the step's only O(dτ²) part.
`U·R alone` is the backend's own matrix product on U in the layout the donated
step keeps it in: what rotating U costs with that product, before any of the
step's other work. `flops of U·R at peak` is the arithmetic floor of a dense
τ×τ rotation on the thread count of the run: a step that rotates U cannot take
fewer passes than this, whatever its memory traffic.

"Before" is the library as it was before this work (the straightforward
array-API implementation of the paper's algorithm), "after" the current one.
"""


def page(rows: list[dict[str, Any]], tables: str, figures: list[Path], where: Path) -> str:
    """Assemble the page: introduction, machine, notes (``benchmarks/notes.md``), tables, figures, commands."""
    machine = _machine(rows)
    notes_path = HERE / "notes.md"
    notes = notes_path.read_text() if notes_path.exists() else ""
    figs = "\n".join(f"![{f.stem}]({os.path.relpath(f, where)})\n" for f in figures)
    commands = """\
## Reproduce

```bash
# the current checkout ("after"); --quick: float32, d ∈ {1e5, 1e6}, τ ∈ {4, 16, 64}
python benchmarks/bench.py --label after --out benchmarks/results/after
# any other checkout of the library ("before")
python benchmarks/bench.py --lib /path/to/other/checkout --label before --out benchmarks/results/before
# tables, figures and this page
python benchmarks/report.py benchmarks/results/before/results.csv benchmarks/results/after/results.csv \\
    --out docs/benchmarks_results --page docs/benchmarks.md
```

`--threads N` sets the BLAS, XLA and PyTorch thread counts (default 1, the
robust choice on a shared machine); `--backends`, `--dtypes`, `--dims`,
`--ranks`, `--ops` and `--rounds` restrict the table; cases that would not fit
in the available memory are skipped and listed as such.
"""
    return f"{INTRO}\n{machine}\n{notes}\n{tables}\n## Figures\n\n{figs}\n{commands}"


def _machine(rows: list[dict[str, Any]]) -> str:
    import platform

    bw = sorted({r.get("copy_gbps") for r in rows if r.get("copy_gbps")}, key=float)
    span = f"{bw[0]}–{bw[-1]} GB/s" if bw else "n/a"
    return (
        "## Machine\n\n"
        f"Measured on {platform.machine()} ({_cpu()}), one thread per library, Python "
        f"{platform.python_version()}. Copy bandwidth of U seen in the runs: {span} "
        "(high values: U fits in the last-level cache).\n"
    )


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"
