"""Machinery of the adversarial-stream tests: the three update methods, one-step float64 references.

Every update is checked against a dense float64 reference of *one step from the
state it started from* (so errors do not accumulate into the check), and
classified by what the reference says it should be:

* ``accept``: the exact result is well inside the dtype's range; the library
  must accept the update and agree with the reference;
* ``reject``: the exact result overflows the dtype (or, for QNG, leaves the
  factor range); the library must reject it, count it in ``num_nonfinite``
  and leave every other field bit for bit unchanged;
* ``either``: at the edge of a range (or where the Sherman–Morrison path has
  lost all its digits, σ/γ ≳ 1/eps); both outcomes are allowed, but an accepted
  update must still satisfy the invariants.

The state's invariants (finite; Ginger: ``UᵀU = I``, σ ≥ 0 descending; QNG:
β ≥ 0, scales in (0, 1], ``sqnorms = ‖q‖²``) are checked after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lowrank_ggn as lg

METHODS = ("eigen", "sherman-morrison", "qng")


@dataclass
class Tally:
    """What happened over a run: counts and the worst normalised errors."""

    steps: int = 0
    accepted: int = 0
    rejected: int = 0
    worst_err: float = 0.0  # reference error / tolerance unit (≤ 1 passes)
    worst_orth: float = 0.0
    unverified: int = 0  # steps at the edge of a range: invariants checked, values not
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.accepted}/{self.steps} accepted"]
        if self.rejected:
            parts.append(f"{self.rejected} rejected (counted, state unchanged)")
        parts.append(f"max err/tol {self.worst_err:.2g}")
        if self.worst_orth:
            parts.append(f"max ‖UᵀU−I‖ {self.worst_orth:.1e}")
        if self.unverified:
            parts.append(f"{self.unverified} at a range edge (invariants only)")
        return ", ".join(parts + self.notes)


class Runner:
    """One update method on one backend: init, update, query, and the per-step reference check."""

    def __init__(self, xp: Any, method: str, dim: int, rank: int, *, decay: float, damping: float = 1e-2) -> None:
        self.xp, self.method, self.dim, self.rank = xp, method, dim, rank
        self.decay, self.damping = decay, damping
        # The library computes with the decay rounded to the state's dtype (float32: 1 − 1e-6 → 1 − 9.5e-7).
        self.alpha = float(np.asarray(decay, dtype=xp.np_dtype))
        self.eps = xp.eps
        self.tiny = float(np.finfo(xp.np_dtype).smallest_normal)
        self.big = float(np.finfo(xp.np_dtype).max)
        self.tally = Tally()
        self.updates = 0  # all updates, checked or not (orthogonality may drift with each)
        self._update = _jitted(xp, "qng" if method == "qng" else "ginger")

    def init(self) -> Any:
        if self.method == "qng":
            return lg.qng_init(self.dim, self.rank, xp=self.xp.module, dtype=self.xp.dtype)
        return lg.ginger_init(self.dim, self.rank, xp=self.xp.module, dtype=self.xp.dtype)

    def update(self, state: Any, d: Any) -> Any:
        self.updates += 1
        if self.method == "qng":
            return self._update(state, d, decay=self.decay)
        if self.method == "eigen":
            return self._update(state, d, decay=self.decay)
        return self._update(state, d, decay=self.decay, damping=self.damping, method="sherman-morrison")

    def host(self, state: Any) -> list[np.ndarray]:
        return [self.xp.to_numpy(a) for a in state]

    # ------------------------------------------------------------------ one checked step

    def step(self, state: Any, d_np: np.ndarray) -> Any:
        """Update with ``d_np`` (cast to the backend's dtype) and check the result against the reference."""
        d_np = self.xp.to_numpy(self.xp.asarray(d_np))  # the vector as the backend sees it
        before = self.host(state)
        new = self.update(state, self.xp.asarray(d_np))
        after = self.host(new)
        self.tally.steps += 1
        rejected = int(after[-1]) == int(before[-1]) + 1
        assert int(after[-1]) in (int(before[-1]), int(before[-1]) + 1)
        with np.errstate(over="ignore", invalid="ignore"):  # the float64 reference of a huge d overflows
            expect = self._expect(before, d_np)
        if expect == "either":
            self.tally.unverified += 1
        if rejected:
            self.tally.rejected += 1
            assert expect != "accept", f"update rejected but the reference says it is in range: {self._why}"
            for a, b in zip(before[:-1], after[:-1], strict=True):
                np.testing.assert_array_equal(a, b)
        else:
            self.tally.accepted += 1
            assert expect != "reject", f"update accepted but the reference says it overflows: {self._why}"
            assert int(after[-2]) == int(before[-2]) + 1
            self.check_invariants(after)
            if expect == "accept":
                with np.errstate(over="ignore", invalid="ignore"):
                    self._compare(before, after, d_np)
        return new

    # ------------------------------------------------------------------ invariants

    def check_invariants(self, host: list[np.ndarray]) -> None:
        for a in host:
            assert np.all(np.isfinite(a)), "non-finite state"
        if self.method == "qng":
            factors, betas, scales, sqnorms = host[:4]
            assert np.all(betas >= 0)
            assert np.all((scales > 0) & (scales <= 1))
            ref = np.sum(factors * factors, axis=1)
            # Squares below the smallest normal may be flushed to 0 (JAX on CPU): up to dim·tiny each.
            assert np.all(np.abs(sqnorms - ref) <= 10 * self.eps * ref + 4 * self.dim * self.tiny)
            return
        u, s = host[0], host[1]
        orth = float(np.abs(u.T @ u - np.eye(self.rank)).max())
        self.tally.worst_orth = max(self.tally.worst_orth, orth)
        assert orth <= 50 * self.eps * math.sqrt(self.dim) * max(1, self.updates) ** 0.5, orth
        assert np.all(s >= 0)
        assert np.all(np.diff(s) <= 0)

    # ------------------------------------------------------------------ references

    def _expect(self, before: list[np.ndarray], d: np.ndarray) -> str:
        """Classify the step from float64 arithmetic: accept, reject or either."""
        if not np.all(np.isfinite(d)):
            self._why = "d is not finite"
            return "reject"
        if self.method == "qng":
            q = qng_solve(*before[:3], d)
            sq = float(q @ q)
            limit = math.sqrt(self.big)
            self._why = f"‖q‖² = {sq:.3g}, limit {limit:.3g}"
            return "reject" if sq > 2 * limit else "accept" if sq < limit / 2 else "either"
        return self._expect_ginger(before[1], float(np.sum(d.astype(np.float64) ** 2)))

    def _expect_ginger(self, s: np.ndarray, d_sq: float) -> str:
        alpha = self.alpha
        self._why = f"(1−α)‖d‖² = {(1 - alpha) * d_sq:.3g}, max {self.big:.3g}"
        top = alpha * float(s[0]) + (1 - alpha) * d_sq
        if self.method == "sherman-morrison" and top / self.damping > 0.01 / self.eps:
            # The path works with κ ≤ 1/γ and maps back through 1 − γκ ≈ γ/σ: no digits left.
            self._why = f"σ/γ = {top / self.damping:.3g} ≥ 0.01/eps: the Sherman–Morrison path has no digits left"
            return "either"
        if (1 - alpha) * d_sq > self.big:
            return "reject"
        if (1 - alpha) * d_sq * self.dim + alpha * float(np.sum(s)) > self.big / 100:
            return "either"
        return "accept"

    def _compare(self, before: list[np.ndarray], after: list[np.ndarray], d: np.ndarray) -> None:
        if self.method == "qng":
            self._compare_qng(before, after, d)
        else:
            self._compare_ginger(before, after, d)

    def _compare_ginger(self, before: list[np.ndarray], after: list[np.ndarray], d: np.ndarray) -> None:
        u, s = before[0], before[1]
        alpha = self.alpha
        m = alpha * (u * s) @ u.T + (1 - alpha) * np.outer(d, d)
        w = np.sort(np.linalg.eigvalsh(m))[::-1]
        scale = max(float(w[0]), alpha * float(s[0]), (1 - alpha) * float(d @ d))
        unit = 20 * self.dim * self.eps * scale + 1000 * self.tiny
        if self.method == "sherman-morrison":
            unit *= 1 + scale / self.damping
        nu, ns = after[0], after[1]
        err = float(np.abs(ns - w[: self.rank]).max()) / unit
        resid = np.linalg.norm(m - (nu * ns) @ nu.T, 2)
        truncation = float(w[self.rank]) if self.rank < self.dim else 0.0
        # Documented in lowrank_eigh_update: a residual r = ‖d − UUᵀd‖ ≤ √eps·‖d‖ is treated as rounding
        # error and dropped, with the cross terms (1−α)·r·Uᵀd of the exact update (an error of up to
        # √eps·(1−α)‖d‖² in the represented matrix, not in the eigenvalues beyond (1−α)r²).
        c = u.T @ d
        r = float(np.linalg.norm(d - u @ c))
        dropped = (
            2 * (1 - alpha) * r * float(np.linalg.norm(c))
            if r <= 2 * math.sqrt(self.eps) * float(np.linalg.norm(d))
            else 0.0
        )
        err = max(err, max(abs(resid - truncation) - dropped, 0.0) / unit)
        self.tally.worst_err = max(self.tally.worst_err, err)
        assert err <= 1, f"step differs from the dense reference by {err:.3g} tolerance units"

    def _compare_qng(self, before: list[np.ndarray], after: list[np.ndarray], d: np.ndarray) -> None:
        q = qng_solve(*before[:3], d)
        alpha = self.alpha
        sq = float(q @ q)
        beta = (1 - alpha) / (math.sqrt(alpha + (1 - alpha) * sq) + math.sqrt(alpha))
        unit = 10 * self.rank * self.eps * qng_error_scale(before[2]) * float(np.linalg.norm(d)) + 1000 * self.tiny
        err = float(np.linalg.norm(after[0][-1] - q)) / unit
        beta_err = abs(float(after[1][-1]) - beta) / (beta * (1e3 * self.eps + 2 * unit / max(math.sqrt(sq), 1e-300)))
        err = max(err, beta_err)
        self.tally.worst_err = max(self.tally.worst_err, err)
        assert err <= 1, f"new factor differs from the dense reference by {err:.3g} tolerance units"
        assert abs(float(after[2][-1]) - math.sqrt(alpha)) <= 4 * self.eps
        for old, new in zip(before[:4], after[:4], strict=True):  # the window shifted by one slot
            np.testing.assert_array_equal(new[:-1], old[1:])

    # ------------------------------------------------------------------ query

    def check_query(self, state: Any, g_np: np.ndarray, damping: float | None = None) -> float:
        """Compare the preconditioned vector with the dense float64 inverse; return err/tol."""
        with np.errstate(over="ignore", invalid="ignore"):  # a reference may overflow: then ±inf is right
            return self._check_query(state, g_np, damping)

    def _check_query(self, state: Any, g_np: np.ndarray, damping: float | None) -> float:
        host = self.host(state)
        g_np = self.xp.to_numpy(self.xp.asarray(g_np))
        if self.method == "qng":
            y = self.xp.to_numpy(lg.qng_precondition(state, self.xp.asarray(g_np)))
            assert not np.any(np.isnan(y)), "query returned NaN"
            inner = qng_solve(*host[:3], g_np)
            exact = qng_solve(*host[:3], inner, transpose=True)
            unit = 10 * self.rank * self.eps * qng_error_scale(host[2]) ** 2 * float(np.linalg.norm(g_np))
        else:
            gamma = self.damping if damping is None else damping
            u, s = host[0], host[1]
            mat = gamma * np.eye(self.dim) + (u * s) @ u.T
            y = self.xp.to_numpy(lg.ginger_precondition(state, self.xp.asarray(g_np), damping=gamma))
            assert not np.any(np.isnan(y)), "query returned NaN"
            w, v = np.linalg.eigh(mat)
            w_min = max(float(w[0]), 1e-300)
            exact = v @ ((v.T @ g_np) / w)
            cond = float(w[-1]) / w_min
            unit = 10 * self.dim * self.eps * cond * float(np.linalg.norm(g_np)) / w_min
        if float(np.linalg.norm(exact)) * 1.01 >= self.big:  # the exact answer overflows: ±inf is right, NaN is not
            return 0.0
        assert np.all(np.isfinite(y)), "query overflowed although the exact result is in range"
        err = float(np.linalg.norm(y - exact)) / (unit + 1000 * self.tiny)
        assert err <= 1, f"query differs from the dense inverse by {err:.3g} tolerance units"
        return err


_JIT_CACHE: dict[tuple[str, str], Any] = {}


def _jitted(xp: Any, which: str) -> Any:
    """The update function, jitted once per process on JAX (so that tests share compilations)."""
    key = (xp.name, which)
    if key not in _JIT_CACHE:
        if which == "qng":
            _JIT_CACHE[key] = xp.maybe_jit(lg.qng_update)
        else:
            _JIT_CACHE[key] = xp.maybe_jit(lg.ginger_update, static_argnames=("method", "reorthonormalize_every"))
    return _JIT_CACHE[key]


def qng_solve(
    factors: np.ndarray, betas: np.ndarray, scales: np.ndarray, v: np.ndarray, *, transpose: bool = False
) -> np.ndarray:
    """``Â⁻¹ v`` (or ``Â⁻ᵀ v``) in float64, one factor at a time, in the cancellation-free form.

    ``K = sI + b q̂q̂ᵀ`` (``b = β‖q‖²``): ``K⁻¹v = (v − q̂(q̂ᵀv))/s + q̂(q̂ᵀv)/(s + b)``. A dense solve
    with ``K`` (let alone with the product ``Â``) fails once ``b ≫ s`` (a huge ``d``).
    """
    order = range(factors.shape[0] - 1, -1, -1) if transpose else range(factors.shape[0])
    out = v.astype(np.float64)
    for i in order:
        q = factors[i].astype(np.float64)
        norm = float(np.linalg.norm(q))
        s = float(scales[i])
        if norm == 0:
            out = out / s
            continue
        qh = q / norm
        along = qh * float(qh @ out)
        out = (out - along) / s + along / (s + float(betas[i]) * norm * norm)
    return out


def qng_error_scale(scales: np.ndarray) -> float:
    """``Π_i 1/s_i ≥ ‖Â⁻¹‖``: each factor solve errs by ``eps·‖v‖/s_i``, amplified by the later factors."""
    return float(np.prod(1 / scales.astype(np.float64)))


def warm(runner: Runner, rng: np.random.Generator, steps: int, scale: float = 1.0) -> Any:
    """A state after ``steps`` checked updates with a decaying-spectrum random stream."""
    state = runner.init()
    spectrum = np.linspace(1.0, 0.05, runner.dim)
    for _ in range(steps):
        state = runner.step(state, scale * spectrum * rng.standard_normal(runner.dim))
    return state
