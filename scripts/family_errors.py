"""How tight is the certificate ρ? ‖M − M̃‖₂ / ρ for Ginger and Frequent Directions on a real stream.

Usage: python scripts/family_errors.py [--stream digits-mlp] [--steps 300] [--rank 8] [--decay 0.95]
Prints one table row per checkpoint step (dense float64 EMA as the reference; NumPy).
"""

from __future__ import annotations

import argparse

import numpy as np

import lowrank_ggn as lg
from lowrank_ggn.studies import make_stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="digits-mlp")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--decay", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    methods = {
        "ginger": lg.ginger(rank=args.rank, decay=args.decay),
        "fd": lg.frequent_directions(rank=args.rank, decay=args.decay),
    }
    states: dict[str, object] = {}
    m = None
    print(f"stream={args.stream} rank={args.rank} decay={args.decay}")
    print("| step | method | ‖M − M̃‖₂ | ρ | ‖M − M̃‖₂/ρ | λ_min(M − M̃) |")
    print("|---|---|---|---|---|---|")
    checkpoints = {args.steps // 4, args.steps // 2, args.steps}
    for item in make_stream(args.stream, steps=args.steps, seed=args.seed):
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
                print(f"| {t} | {k} | {ev[-1]:.4g} | {rho:.4g} | {ev[-1] / rho:.3f} | {ev[0]:.2g} |")


if __name__ == "__main__":
    main()
