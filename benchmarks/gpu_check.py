"""Correctness of the accelerated backends against CPU float64 (part of ``gpu.sh``).

For every requested backend and dtype, runs a stream of curvature vectors
through the direct form (plain and fused update, donated where the backend
supports it) and the product form, on the device, and compares with NumPy
float64 on the CPU: the represented curvature ``U diag(σ) Uᵀ`` on a random
probe, the eigenvalues, the fused query, QNG's query. Tolerances are set from
the dtype's epsilon.

Backends: ``cupy``, ``jax-gpu``, ``torch-cuda`` (and, to test this script on a
machine without a GPU, ``numpy``, ``jax-cpu``, ``torch-cpu``). A backend that
is not available is reported as SKIP; the exit status is 1 if any check FAILs.

Usage::

    python benchmarks/gpu_check.py --backends cupy,jax-gpu,torch-cuda
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


class _Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


def _backend(name: str, dtype: str) -> tuple[Any, Any, Any, Any]:  # noqa: C901
    """Return ``(module, dtype, to_device, to_numpy)`` or raise _Skip."""
    if name == "numpy":
        return np, getattr(np, dtype), lambda x: np.asarray(x, dtype=dtype), np.asarray
    if name == "cupy":
        try:
            import cupy
        except ImportError as err:
            raise _Skip(str(err)) from err
        if not cupy.cuda.is_available():
            msg = "CuPy is installed but no CUDA device is visible"
            raise _Skip(msg)
        return cupy, getattr(cupy, dtype), lambda x: cupy.asarray(np.asarray(x, dtype=dtype)), cupy.asnumpy
    if name.startswith("jax"):
        try:
            import jax
            import jax.numpy as jnp
        except ImportError as err:
            raise _Skip(str(err)) from err
        jax.config.update("jax_enable_x64", True)
        platform = name.split("-", 1)[1] if "-" in name else "cpu"
        try:
            device = jax.devices(platform)[0]
        except RuntimeError as err:
            raise _Skip(f"no JAX {platform} device: {err}") from err
        return jnp, getattr(jnp, dtype), lambda x: jax.device_put(np.asarray(x, dtype=dtype), device), np.asarray
    if name.startswith("torch"):
        try:
            import torch
        except ImportError as err:
            raise _Skip(str(err)) from err
        dev = name.split("-", 1)[1] if "-" in name else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            msg = "PyTorch sees no CUDA device"
            raise _Skip(msg)
        return (
            torch,
            getattr(torch, dtype),
            lambda x: torch.from_numpy(np.array(x, dtype=dtype)).to(dev),
            lambda x: x.detach().cpu().numpy(),
        )
    msg = f"unknown backend {name}"
    raise _Skip(msg)


def check(name: str, dtype: str, *, dim: int, rank: int, steps: int, seed: int = 0) -> list[str]:  # noqa: C901, PLR0915
    """Run the comparisons; return a list of failure messages (empty: pass)."""
    import lowrank_ggn as lg

    module, dt, dev, host = _backend(name, dtype)
    jit = _jit(name)
    eps = float(np.finfo(dtype).eps)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, 4 * rank)))
    spectrum = np.arange(1, 4 * rank + 1) ** -1.0
    data = (rng.standard_normal((steps, 4 * rank)) * np.sqrt(spectrum)) @ q.T + 0.05 * rng.standard_normal((steps, dim))
    grads = rng.standard_normal((steps, dim))
    data, grads = np.asarray(data, dtype=dtype).astype(np.float64), np.asarray(grads, dtype=dtype).astype(np.float64)
    alpha, gamma = 0.95, 1e-2

    ref = lg.ginger_init(dim, rank)
    ref_q = lg.qng_init(dim, rank)
    for d in data:
        ref, y_ref = lg.ginger_update_precondition(ref, d, grads[-1], decay=alpha, damping=gamma)
        ref_q = lg.qng_update(ref_q, d, decay=alpha)
    probe = rng.standard_normal((dim, 3))
    m_ref = (ref.basis * ref.eigvals) @ (ref.basis.T @ probe)
    scale = np.abs(m_ref).max()
    y_scale = np.abs(y_ref).max()
    cond = 1 + ref.eigvals[0] / gamma
    tol_m = 200 * eps * steps * scale
    tol_y = 200 * eps * steps * cond * y_scale

    failures = []
    variants = {
        "direct, plain": jit(lambda s, d, _g: (lg.ginger_update(s, d, decay=alpha), None)),
        "direct, fused": jit(lambda s, d, g: lg.ginger_update_precondition(s, d, g, decay=alpha, damping=gamma)),
        "product, fused": jit(
            lambda s, d, g: lg.ginger_product_update_precondition(s, d, g, decay=alpha, damping=gamma)
        ),
    }
    for label, step in variants.items():
        state = lg.ginger_init(dim, rank, xp=module, dtype=dt)
        if label.startswith("product"):
            state = lg.ginger_product_from_state(state)
        y = None
        for d in data:
            state, y = step(state, dev(d), dev(grads[-1]))
        direct = lg.ginger_product_to_state(state) if label.startswith("product") else state
        u, s = host(direct.basis).astype(np.float64), host(direct.eigvals).astype(np.float64)
        err_m = np.abs((u * s) @ (u.T @ probe) - m_ref).max()
        err_s = np.abs(s - ref.eigvals).max()
        if not err_m <= tol_m:
            failures.append(f"{label}: represented matrix off by {err_m:.2e} (tolerance {tol_m:.2e})")
        if not err_s <= tol_m:
            failures.append(f"{label}: eigenvalues off by {err_s:.2e} (tolerance {tol_m:.2e})")
        if y is not None:
            err_y = np.abs(host(y).astype(np.float64) - y_ref).max()
            if not err_y <= tol_y:
                failures.append(f"{label}: fused query off by {err_y:.2e} (tolerance {tol_y:.2e})")
        orth = np.abs(u.T @ u - np.eye(rank)).max()
        if not orth <= 100 * eps * np.sqrt(dim) * steps**0.5:
            failures.append(f"{label}: basis not orthonormal ({orth:.2e})")
    qstate = lg.qng_init(dim, rank, xp=module, dtype=dt)
    qstep = jit(lambda s, d: lg.qng_update(s, d, decay=alpha))
    for d in data:
        qstate = qstep(qstate, dev(d))
    yq = host(lg.qng_precondition(qstate, dev(grads[0]))).astype(np.float64)
    yq_ref = lg.qng_precondition(ref_q, grads[0])
    err_q = np.abs(yq - yq_ref).max()
    tol_q = 1000 * eps * steps * np.abs(yq_ref).max() / alpha**rank
    if not err_q <= tol_q:
        failures.append(f"QNG query off by {err_q:.2e} (tolerance {tol_q:.2e})")
    return failures


def _jit(name: str) -> Any:
    if name.startswith("jax"):
        import jax

        return jax.jit
    return lambda f: f


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="cupy,jax-gpu,torch-cuda")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--dim", type=int, default=20_000)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lib", default=None, help="import lowrank_ggn from here (default: this checkout)")
    args = p.parse_args()
    sys.path.insert(0, str(Path(args.lib).resolve() if args.lib else HERE.parent))
    status = 0
    for name in args.backends.split(","):
        for dtype in args.dtypes.split(","):
            t0 = time.perf_counter()
            try:
                failures = check(name, dtype, dim=args.dim, rank=args.rank, steps=args.steps)
            except _Skip as why:
                print(f"SKIP {name} {dtype}: {why}")
                continue
            except Exception:  # noqa: BLE001 - report the crash and go on with the other backends
                print(f"FAIL {name} {dtype}: crashed\n{traceback.format_exc()}")
                status = 1
                continue
            took = time.perf_counter() - t0
            if failures:
                status = 1
                print(f"FAIL {name} {dtype} ({took:.1f}s):\n  " + "\n  ".join(failures))
            else:
                print(f"PASS {name} {dtype} ({took:.1f}s)")
            sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
