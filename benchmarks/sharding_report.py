"""Per-device memory and communication of sharded Ginger and QNG, read from the compiled programs.

For each device count n, compiles one optimiser step — the update with a
curvature vector ``d`` followed by the query of a gradient ``g`` — with the
state and the vectors split along ``dim`` over n devices
(:mod:`lowrank_ggn.sharding`), and reports from the compiled program:

* the bytes of the state each device holds (XLA's argument sizes, less ``d`` and ``g``);
* the peak bytes each device needs for the step: arguments + temporaries +
  outputs − outputs written over donated arguments;
* the collectives of the step, their number and the bytes they reduce
  (collectives in a conditional branch run only when that branch does, so the
  byte count is an upper bound).

Nothing is allocated: the programs are compiled from abstract shapes, so the
default problem is the one of a 10⁹-parameter model (``dim = 2³⁰``, τ = 32,
float32: ``U`` alone is 128 GiB). The devices are simulated CPU devices
(``--xla_force_host_platform_device_count``); the partitioned programs, and
so the numbers, are those XLA produces for any backend up to its fusion
decisions. n = 1 is the single-device program (:func:`lowrank_ggn.ginger_update`
and friends under ``jax.jit``).

Usage::

    python benchmarks/sharding_report.py                     # markdown table on stdout
    python benchmarks/sharding_report.py --out docs/_generated/sharding_table.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

_MAX_DEVICES = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_MAX_DEVICES}"
).strip()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import lowrank_ggn as lg  # noqa: E402
import lowrank_ggn.sharding as lgs  # noqa: E402

DECAY, DAMPING, AXIS = 0.99, 1e-3, "fsdp"


def _abstract(tree, shardings):
    """Shapes and dtypes of ``tree`` with ``shardings`` (one sharding, or a tree of them)."""
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _programs(dim: int, rank: int, n: int, dtype) -> dict:
    """The compiled programs of one device count, from abstract arguments."""
    if n == 1:
        dev = jax.devices()[0]
        one = jax.sharding.SingleDeviceSharding(dev)
        ginger = _abstract(jax.eval_shape(lambda: lg.ginger_init(dim, rank, xp=jnp, dtype=dtype)), one)
        qng = _abstract(jax.eval_shape(lambda: lg.qng_init(dim, rank, xp=jnp, dtype=dtype)), one)
        vec = jax.ShapeDtypeStruct((dim,), dtype, sharding=one)
        ginger_update, ginger_precondition = lg.ginger_update, lg.ginger_precondition
        qng_update, qng_precondition = lg.qng_update, lg.qng_precondition
        reorth = lg.ginger_reorthonormalize
    else:
        mesh = jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Explicit,), devices=jax.devices()[:n])
        kw = {"mesh": mesh, "axis": AXIS}
        ginger = _abstract(
            jax.eval_shape(lambda: lg.ginger_init(dim, rank, xp=jnp, dtype=dtype)), lgs.ginger_sharding(mesh, AXIS)
        )
        qng = _abstract(
            jax.eval_shape(lambda: lg.qng_init(dim, rank, xp=jnp, dtype=dtype)), lgs.qng_sharding(mesh, AXIS)
        )
        vec = jax.ShapeDtypeStruct((dim,), dtype, sharding=NamedSharding(mesh, P(AXIS)))

        def ginger_update(s, d, **a):
            return lgs.ginger_update(s, d, **a, **kw)

        def ginger_precondition(s, g, **a):
            return lgs.ginger_precondition(s, g, **a, **kw)

        def qng_update(s, d, **a):
            return lgs.qng_update(s, d, **a, **kw)

        def qng_precondition(s, g):
            return lgs.qng_precondition(s, g, **kw)

        def reorth(s):
            return lgs.ginger_reorthonormalize(s, **kw)

    def ginger_step(s, d, g):
        s = ginger_update(s, d, decay=DECAY)
        return s, ginger_precondition(s, g, damping=DAMPING)

    def qng_step(s, d, g):
        s = qng_update(s, d, decay=DECAY)
        return s, qng_precondition(s, g)

    return {
        "Ginger step": jax.jit(ginger_step, donate_argnums=0).lower(ginger, vec, vec).compile(),
        "QNG step": jax.jit(qng_step, donate_argnums=0).lower(qng, vec, vec).compile(),
        "Ginger re-orthonormalisation": jax.jit(reorth, donate_argnums=0).lower(ginger).compile(),
    }


def _naive(dim: int, rank: int, n: int, dtype) -> dict:
    """``jax.jit`` of the single-device functions with sharded inputs on an ``Auto`` mesh (no shard_map)."""
    mesh = jax.make_mesh((n,), (AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])
    ginger = _abstract(
        jax.eval_shape(lambda: lg.ginger_init(dim, rank, xp=jnp, dtype=dtype)), lgs.ginger_sharding(mesh, AXIS)
    )
    vec = jax.ShapeDtypeStruct((dim,), dtype, sharding=NamedSharding(mesh, P(AXIS)))

    def ginger_step(s, d, g):
        s = lg.ginger_update(s, d, decay=DECAY)
        return s, lg.ginger_precondition(s, g, damping=DAMPING)

    shardings = (lgs.ginger_sharding(mesh, AXIS), NamedSharding(mesh, P(AXIS)))
    return {
        "Ginger step": jax.jit(ginger_step, donate_argnums=0, out_shardings=shardings)
        .lower(ginger, vec, vec)
        .compile(),
        "Ginger re-orthonormalisation": jax.jit(
            lg.ginger_reorthonormalize, donate_argnums=0, out_shardings=shardings[0]
        )
        .lower(ginger)
        .compile(),
    }


def _power_of_two(n: int) -> str:
    """Return `` (2ᵏ)`` when ``n = 2ᵏ``, else nothing."""
    if n & (n - 1):
        return ""
    return " (2" + str(n.bit_length() - 1).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")) + ")"


def _size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{int(nbytes)} B"


def _row(program, n: int, vector_bytes: int, name: str) -> dict:
    mem = program.memory_analysis()
    found = lgs.collectives(program) if n > 1 else []
    assert not any(c.in_loop for c in found), f"{name}: a collective in a loop; counts would be per iteration"
    vectors = 0 if "re-orth" in name else 2 * vector_bytes // n
    peak = mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    return {
        "state": mem.argument_size_in_bytes - vectors,
        "peak": peak,
        "count": len(found),
        "conditional": sum(c.in_conditional for c in found),
        "bytes": sum(c.nbytes for c in found),
        "kinds": sorted({c.kind for c in found}),
    }


def report(dim: int, rank: int, devices: list[int], dtype) -> str:
    """Return the markdown tables."""
    itemsize = jnp.dtype(dtype).itemsize
    vector_bytes = dim * itemsize
    lines = [
        (
            f"`dim` = {dim:,}{_power_of_two(dim)}, τ = {rank}, {jnp.dtype(dtype).name}: "
            f"`U` is {_size(dim * rank * itemsize)}, a `dim`-vector {_size(vector_bytes)}. "
            "Per device; a step is one update and one query."
        ),
        "",
        (
            "| program | devices | state per device | peak per device | collectives per step "
            "| bytes all-reduced per step |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = {n: _programs(dim, rank, n, dtype) for n in devices}
    for name in ("Ginger step", "QNG step", "Ginger re-orthonormalisation"):
        for n in devices:
            r = _row(rows[n][name], n, vector_bytes, name)
            kinds = "" if not r["kinds"] or r["kinds"] == ["all-reduce"] else f" ({', '.join(r['kinds'])})"
            cond = f" ({r['conditional']} conditional)" if r["conditional"] else ""
            lines.append(
                f"| {name} | {n} | {_size(r['state'])} | {_size(r['peak'])} | {r['count']}{cond}{kinds} "
                f"| {r['bytes']:,} |"
            )
    n = max(devices)
    lines += [
        "",
        (
            f"For contrast, `jax.jit` of the single-device functions with the same shardings on an `Auto` mesh "
            f"of {n} devices (no `shard_map`):"
        ),
        "",
        "| program | devices | peak per device | collectives | bytes communicated |",
        "|---|---:|---:|---|---:|",
    ]
    for name, program in _naive(dim, rank, n, dtype).items():
        r = _row(program, n, vector_bytes, name)
        found = lgs.collectives(program)
        kinds = ", ".join(f"{sum(c.kind == k for c in found)} {k}" for k in r["kinds"])
        lines.append(f"| {name} | {n} | {_size(r['peak'])} | {kinds} | {r['bytes']:,} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2**30, help="number of parameters (default 2^30)")
    parser.add_argument("--rank", type=int, default=32, help="τ (default 32)")
    parser.add_argument("--devices", default="1,2,4,8", help=f"device counts, at most {_MAX_DEVICES}")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    devices = [int(n) for n in args.devices.split(",")]
    if max(devices) > _MAX_DEVICES or min(devices) < 1 or any(args.dim % n for n in devices):
        parser.error(f"device counts must lie in [1, {_MAX_DEVICES}] and divide --dim")
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    text = report(args.dim, args.rank, devices, getattr(jnp, args.dtype))
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
