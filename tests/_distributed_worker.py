"""One rank of the torch.distributed tests: runs the distributed functions on its block.

Started by ``tests/test_distributed.py`` through ``torch.multiprocessing.spawn``;
each rank writes its blocks of the results to ``out_dir/rank{k}.npz`` and the
test compares their concatenation with the single-process results.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def run(rank: int, world: int, store: str, out_dir: str, case: dict[str, Any]) -> None:
    """Entry point of one rank (``torch.multiprocessing.spawn`` passes ``rank`` first)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if Path("/sys/class/net/lo").exists():  # Linux: keep gloo on the loopback interface
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch
    import torch.distributed as dist

    import lowrank_ggn as lg
    import lowrank_ggn.distributed as lgd

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        out: dict[str, np.ndarray] = {}
        dim, tau = case["dim"], case["rank"]
        part = lgd.local_slice(dim)
        out["slice"] = np.array([part.start, part.stop])
        for name in ("float64", "float32"):
            dtype = getattr(torch, name)

            def block(x: np.ndarray, dtype: torch.dtype = dtype) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(x[part])).to(dtype)

            state = lgd.ginger_init(part.stop - part.start, tau, dtype=dtype)
            out[f"{name}/init_basis"] = state.basis.numpy()
            for t, d in enumerate(case["ginger_d"]):
                state = lgd.ginger_update(state, block(d), decay=case["decay"], reorthonormalize_every=case["every"])
                if t == case["probe_step"]:
                    for field, value in state._asdict().items():
                        out[f"{name}/probe/{field}"] = value.numpy()
            g = block(case["g"])
            out[f"{name}/ginger_y"] = lgd.ginger_precondition(state, g, damping=case["damping"]).numpy()
            out[f"{name}/ginger_y2"] = lgd.ginger_precondition(
                state, block(case["g2"]), damping=case["damping"]
            ).numpy()
            for field, value in state._asdict().items():
                out[f"{name}/ginger/{field}"] = value.numpy()
            reorth = lgd.ginger_reorthonormalize(state)
            for field, value in reorth._asdict().items():
                out[f"{name}/reorth/{field}"] = value.numpy()

            # The generic fused step, for Ginger and QNG, on the same vectors.
            fused = lg.ginger(rank=tau, decay=case["decay"], reorthonormalize_every=case["every"])
            fs = lgd.ginger_init(part.stop - part.start, tau, dtype=dtype)
            for d in case["ginger_d"]:
                fs, fy = lgd.update_precondition(fused, fs, block(d), g, damping=case["damping"])
            out[f"{name}/fused/y"] = fy.numpy()
            out[f"{name}/fused/basis"] = fs.basis.numpy()
            out[f"{name}/fused/eigvals"] = fs.eigvals.numpy()
            qa = lg.qng(rank=tau, decay=case["decay"])
            qs = lgd.qng_init(part.stop - part.start, tau, dtype=dtype)
            for d in case["qng_d"]:
                qs, qy = lgd.update_precondition(qa, qs, block(d), g, damping=None)
            out[f"{name}/fused/qng_y"] = qy.numpy()

            q = lgd.qng_init(part.stop - part.start, tau, dtype=dtype)
            for d in case["qng_d"]:
                q = lgd.qng_update(q, block(d), decay=case["decay"])
            out[f"{name}/qng_y"] = lgd.qng_precondition(q, g).numpy()
            for field, value in q._asdict().items():
                out[f"{name}/qng/{field}"] = value.numpy()
        np.savez(Path(out_dir) / f"rank{rank}.npz", **out)
    finally:
        dist.destroy_process_group()
