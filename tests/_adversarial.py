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
β ≥ 0, scales in (0, 1], ``sqnorms = ‖q‖²``; product form: ``WᵀW = I`` and
unused rows zero; diagonals ≥ 0) are checked after every step.

``METHODS`` are the Ginger paths (``eigen``, ``sherman-morrison``, the product
form ``product``) and QNG; ``FAMILY`` are the other approximations of the
protocol (Frequent Directions, the exact diagonal, Ginger with the diagonal,
streaming Nyström), each with its own one-step reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import lowrank_ggn as lg

METHODS = ("eigen", "sherman-morrison", "qng", "product")
FAMILY = ("frequent-directions", "diagonal", "ginger-diagonal", "nystrom")
# States with Ginger's low-rank fields U, σ (the product form: U = W Q).
LOW_RANK = ("eigen", "sherman-morrison", "product", "frequent-directions", "ginger-diagonal")
_SEVERITY = {"accept": 0, "either": 1, "reject": 2}


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
        self.approx = approximation(method, rank, decay) if method in FAMILY else None
        self._update = _jitted(xp, method, self.approx)

    def set_decay(self, decay: float) -> None:
        """Update (and check against the reference) with another decay from now on."""
        self.decay, self.alpha = decay, float(np.asarray(decay, dtype=self.xp.np_dtype))
        if self.approx is not None:
            self.approx = approximation(self.method, self.rank, decay)
            self._update = _jitted(self.xp, self.method, self.approx)

    def init(self) -> Any:
        kw = {"xp": self.xp.module, "dtype": self.xp.dtype}
        if self.approx is not None:
            return self.approx.init(self.dim, **kw)
        if self.method == "qng":
            return lg.qng_init(self.dim, self.rank, **kw)
        if self.method == "product":
            return lg.ginger_product_init(self.dim, self.rank, **kw)
        return lg.ginger_init(self.dim, self.rank, **kw)

    def update(self, state: Any, d: Any) -> Any:
        self.updates += 1
        if self.approx is not None:
            return self._update(state, d)
        if self.method == "sherman-morrison":
            return self._update(state, d, decay=self.decay, damping=self.damping, method="sherman-morrison")
        return self._update(state, d, decay=self.decay)

    def precondition(self, state: Any, g: Any, damping: float) -> Any:
        """The library's query (any method but QNG) with the damping γ."""
        if self.approx is not None:
            return self.approx.precondition(state, g, damping=damping)
        if self.method == "product":
            return lg.ginger_product_precondition(state, g, damping=damping)
        return lg.ginger_precondition(state, g, damping=damping)

    def host(self, state: Any) -> list[np.ndarray]:
        return [self.xp.to_numpy(a) for a in state]

    def lowrank(self, host: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(U, σ)`` of a host state with Ginger's low-rank fields (product form: ``U = W Q``)."""
        if self.method == "product":
            columns, coords, count = host[0], host[1], int(host[2])
            return columns[:count].T @ coords[:count], host[3]
        return host[0], host[1]

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
        if self.method in ("diagonal", "ginger-diagonal"):
            assert np.all(host[-3] >= 0), "negative diagonal"
        if self.method not in LOW_RANK:
            return
        if self.method == "product":  # W's rows beyond count and Q's rows beyond count are zero
            columns, coords, count = host[0], host[1], int(host[2])
            assert self.rank <= count < columns.shape[0]
            assert not np.any(columns[count:])
            assert not np.any(coords[count:])
            w_orth = float(np.abs(columns[:count] @ columns[:count].T - np.eye(count)).max())
            assert w_orth <= 50 * self.eps * math.sqrt(self.dim) * max(1, self.updates) ** 0.5, w_orth
        u, s = self.lowrank(host)
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
        if self.method == "diagonal":
            return self._expect_values(self._diagonal_reference(before[0], d), "diagonal")
        if self.method == "nystrom":
            return self._expect_values(self._nystrom_reference(before, d), "sketch")
        expect = self._expect_ginger(self.lowrank(before)[1], float(np.sum(self._scaled(d) ** 2)))
        if self.method == "ginger-diagonal":  # the two parts are accepted or rejected together
            why = self._why
            diag = self._expect_values(self._diagonal_reference(before[4], d), "diagonal")
            if _SEVERITY[diag] > _SEVERITY[expect]:
                return diag
            self._why = why
        return expect

    def _scaled(self, d: np.ndarray) -> np.ndarray:
        """``√(1−α)·d`` in float64: its squares are the new term, in range where the term is."""
        return math.sqrt(1 - self.alpha) * d.astype(np.float64)

    def _expect_values(self, ref: np.ndarray, what: str) -> str:
        """A state field updated elementwise: rejected where its exact value overflows."""
        top = float(np.abs(ref).max(initial=0))
        self._why = f"the new {what} reaches {top:.3g}, max {self.big:.3g}"
        return "reject" if top > self.big else "either" if top > self.big / 16 else "accept"

    def _diagonal_reference(self, m: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.alpha * m.astype(np.float64) + self._scaled(d) ** 2

    def _nystrom_reference(self, host: list[np.ndarray], d: np.ndarray) -> np.ndarray:
        omega, sketch = host[0].astype(np.float64), host[1].astype(np.float64)
        d = d.astype(np.float64)
        return self.alpha * sketch + np.outer((1 - self.alpha) * d, d @ omega)

    def _expect_ginger(self, s: np.ndarray, term: float) -> str:
        """Classify from ``term = (1−α)‖d‖²`` and the old eigenvalues."""
        alpha = self.alpha
        self._why = f"(1−α)‖d‖² = {term:.3g}, max {self.big:.3g}"
        top = alpha * float(s[0]) + term
        if self.method == "sherman-morrison" and top / self.damping > 0.01 / self.eps:
            # The path works with κ ≤ 1/γ and maps back through 1 − γκ ≈ γ/σ: no digits left.
            self._why = f"σ/γ = {top / self.damping:.3g} ≥ 0.01/eps: the Sherman–Morrison path has no digits left"
            return "either"
        if term > self.big:
            return "reject"
        if term * self.dim + alpha * float(np.sum(s)) > self.big / 100:
            return "either"
        return "accept"

    def _compare(self, before: list[np.ndarray], after: list[np.ndarray], d: np.ndarray) -> None:
        if self.method == "qng":
            self._compare_qng(before, after, d)
        elif self.method == "diagonal":
            self._compare_diagonal(before[0], after[0], d)
        elif self.method == "nystrom":
            self._compare_nystrom(before, after, d)
        else:
            self._compare_ginger(before, after, d)
            if self.method == "ginger-diagonal":
                self._compare_diagonal(before[4], after[4], d)

    def _compare_diagonal(self, m_before: np.ndarray, m_after: np.ndarray, d: np.ndarray) -> None:
        """``m' = α m + (1−α) d∘d`` entrywise, to a few roundings (subnormal terms may be flushed)."""
        ref = self._diagonal_reference(m_before, d)
        err = float(np.max(np.abs(m_after - ref) / (8 * self.eps * ref + 4 * self.tiny), initial=0))
        self.tally.worst_err = max(self.tally.worst_err, err)
        assert err <= 1, f"diagonal differs from the reference by {err:.3g} tolerance units"

    def _compare_nystrom(self, before: list[np.ndarray], after: list[np.ndarray], d: np.ndarray) -> None:
        """``Y' = αY + (1−α) d (dᵀΩ)`` entrywise, to the rounding of ``dᵀΩ``; Ω unchanged."""
        np.testing.assert_array_equal(after[0], before[0])
        ref = self._nystrom_reference(before, d)
        d = np.abs(d.astype(np.float64))
        bound = np.abs(before[1]) * self.alpha * 4 + np.outer((1 - self.alpha) * d, d @ np.abs(before[0])) * (
            self.dim + 6
        )
        err = float(np.max(np.abs(after[1] - ref) / (self.eps * bound + 100 * self.tiny), initial=0))
        self.tally.worst_err = max(self.tally.worst_err, err)
        assert err <= 1, f"sketch differs from the reference by {err:.3g} tolerance units"

    def _compare_ginger(self, before: list[np.ndarray], after: list[np.ndarray], d: np.ndarray) -> None:
        u, s = self.lowrank(before)
        alpha = self.alpha
        sd = self._scaled(d)  # √(1−α)·d: (1−α)ddᵀ without forming dᵀd (which may overflow float64)
        m = alpha * (u * s) @ u.T + np.outer(sd, sd)
        w = np.sort(np.linalg.eigvalsh(m))[::-1]
        scale = max(float(w[0]), alpha * float(s[0]), float(sd @ sd))
        unit = 20 * self.dim * self.eps * scale + 1000 * self.tiny
        if self.method == "sherman-morrison":
            unit *= 1 + scale / self.damping
        nu, ns = self.lowrank(after)
        truncation = float(w[self.rank]) if self.rank < self.dim else 0.0
        kept = w[: self.rank]
        if self.method == "frequent-directions":  # δ = λ_{τ+1} is subtracted from the kept eigenvalues
            kept = np.maximum(kept - truncation, 0)
        err = float(np.abs(ns - kept).max()) / unit
        resid = np.linalg.norm(m - (nu * ns) @ nu.T, 2)
        # Documented in lowrank_eigh_update: a residual r = ‖d − UUᵀd‖ ≤ √eps·‖d‖ is treated as rounding
        # error and dropped, with the cross terms (1−α)·r·Uᵀd of the exact update (an error of up to
        # √eps·(1−α)‖d‖² in the represented matrix, not in the eigenvalues beyond (1−α)r²).
        c = u.T @ sd  # in units of √(1−α): (1−α)·r·‖Uᵀd‖ = r_s·‖c_s‖
        r = float(np.linalg.norm(sd - u @ c))
        dropped = 2 * r * float(np.linalg.norm(c)) if r <= 2 * math.sqrt(self.eps) * float(np.linalg.norm(sd)) else 0.0
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
            mat = self.dense_operator(state, host, gamma)
            y = self.xp.to_numpy(self.precondition(state, self.xp.asarray(g_np), gamma))
            assert not np.any(np.isnan(y)), "query returned NaN"
            if mat is None:  # at the edge of the range: finite, not verified
                assert np.all(np.isfinite(y)), "query overflowed"
                return 0.0
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

    def dense_operator(self, state: Any, host: list[np.ndarray], gamma: float) -> np.ndarray | None:
        """The damped operator the query inverts, dense in float64 (None: not representable, not verified)."""
        eye = np.eye(self.dim)
        if self.method == "diagonal":
            return np.diag(gamma + host[0].astype(np.float64))
        if self.method == "nystrom":  # the reconstruction (checked: finite, σ ≥ 0, orthonormal)
            op = self.approx.operator(state, damping=gamma)
            u, s = self.xp.to_numpy(op.basis).astype(np.float64), self.xp.to_numpy(op.eigvals).astype(np.float64)
            assert np.all(np.isfinite(u)), "non-finite reconstructed basis"
            assert np.all(s >= 0), "negative or NaN reconstructed eigenvalue"
            assert float(np.abs(u.T @ u - np.eye(self.rank)).max()) <= 100 * self.dim * self.eps
            if not np.all(np.isfinite(s)):
                # An eigenvalue of M beyond the range while Y = MΩ is in it (documented: σ = +inf).
                assert float(np.abs(host[1]).max()) > self.big / 16, "infinite eigenvalue from a small sketch"
                return None
            return gamma * eye + (u * s) @ u.T
        u, s = (a.astype(np.float64) for a in self.lowrank(host))
        low = (u * s) @ u.T
        if self.method == "ginger-diagonal":  # D = γ + max(m − diag(U diag(σ) Uᵀ), 0)
            return np.diag(gamma + np.maximum(host[4] - np.diag(low), 0)) + low
        return gamma * eye + low


def approximation(method: str, rank: int, decay: float) -> Any:
    """The protocol object of a method of ``FAMILY``."""
    return {
        "frequent-directions": lambda: lg.frequent_directions(rank=rank, decay=decay),
        "diagonal": lambda: lg.diagonal(decay=decay),
        "ginger-diagonal": lambda: lg.ginger_diagonal(rank=rank, decay=decay),
        "nystrom": lambda: lg.nystrom(rank=rank, decay=decay),
    }[method]()


_JIT_CACHE: dict[tuple[Any, ...], Any] = {}


def _jitted(xp: Any, method: str, approx: Any = None) -> Any:
    """The update function, jitted once per process on JAX (so that tests share compilations)."""
    which = "ginger" if method in ("eigen", "sherman-morrison") else method
    key = (xp.name, which, approx)
    if key not in _JIT_CACHE:
        if approx is not None:
            _JIT_CACHE[key] = xp.maybe_jit(approx.update)
        elif which == "qng":
            _JIT_CACHE[key] = xp.maybe_jit(lg.qng_update)
        elif which == "product":
            _JIT_CACHE[key] = xp.maybe_jit(lg.ginger_product_update)
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
