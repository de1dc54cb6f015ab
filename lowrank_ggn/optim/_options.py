r"""Defaults and option checks shared by the optax and torch front-ends.

The defaults were chosen by measurement on the small-scale reproduction of the
paper's image-classification experiments (``python -m experiments.reproduce``:
scikit-learn's digits with an MLP and a residual CNN, and the breast-cancer data
with an MLP; the numbers are in ``experiments/RESULTS.md``). Accuracy there
saturates near 98%, so the measurements rule out bad values more than they
single out the best one.

- ``DEFAULT_DAMPING = 1.0``: Ginger (τ = 4) was trained on the digits MLP and
  CNN with γ ∈ {1e-3, 1e-2, 1e-1, 1}, the learning rate tuned over
  {1, 5} × 10^{−1…−4} for each γ (one seed). γ = 1 had the best tuning-split
  accuracy averaged over the two models (98.5% against 98.0–98.1%; the
  differences are one or two tuning examples) and its best learning rate (0.1)
  lies inside the grid, whereas γ = 1e-3 needed the grid's smallest rate. The
  damping only matters relative to the scale of the curvature: with the
  sampled-label gradient of Eq 8 and a mean negative log-likelihood, the top
  eigenvalues per block were 1e-3…2 on the digits MLP, so γ = 1 shrinks only the
  few directions with σ ≳ 1. Rescale γ with the Fisher of other models.
- ``DEFAULT_RANK = 4``: across τ ∈ {1, 2, 4, 8, 16} no rank beat τ = 4 by more
  than the spread over three seeds (best: τ = 16 on the digits CNN, 98.70 ±
  0.42% against 98.33 ± 0.28%), while memory grows as O(dτ) and time as O(dτ²).
- ``DEFAULT_DECAY = 0.99``: the paper's "second moment" coefficient (§4.1); in
  the α × τ grid (α ∈ {0.9, 0.99, 0.999}, τ ∈ {2, 4, 8}, both digits models)
  α = 0.99 was never worse than the best α by more than the seed spread.
- ``DEFAULT_MOMENTUM = 0.9``: the paper's "first moment" coefficient, applied
  as heavy-ball momentum on the preconditioned direction; not varied.
- ``DEFAULT_LEARNING_RATE = 0.1`` (torch front-end only): the rate tuned for
  Ginger at the default damping on all three dataset/model pairs, and for QNG
  on two of the three (0.05 on the digits CNN).
- ``DEFAULT_REORTHONORMALIZE_EVERY = 100``: re-orthonormalising every ~100
  updates keeps the float32 drift of ``UᵀU − I`` near 4e-8 (it random-walks to
  1.5e-5 after 20k updates otherwise, see the design notes), at an amortised
  cost of about 1% of an update.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from lowrank_ggn._validation import check_damping, check_decay

__all__ = [
    "DEFAULT_DAMPING",
    "DEFAULT_DECAY",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MOMENTUM",
    "DEFAULT_RANK",
    "DEFAULT_REORTHONORMALIZE_EVERY",
    "block_rank",
    "check_common",
    "check_nonnegative",
    "check_positive_int",
    "check_rank",
]

DEFAULT_DECAY = 0.99
DEFAULT_RANK = 4
DEFAULT_DAMPING = 1.0
DEFAULT_MOMENTUM = 0.9
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_REORTHONORMALIZE_EVERY = 100


def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> None:
    """Check that ``value`` is a Python integer ≥ 1 (or ``None`` when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{name} must be a positive integer, got {type(value).__name__}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{name} must be a positive integer, got {value}"
        raise ValueError(msg)


def check_rank(rank: Any) -> None:
    """Check that ``rank`` is a Python integer ≥ 1."""
    check_positive_int(rank, "rank")


def check_nonnegative(value: Any, name: str, *, upper: float | None = None) -> None:
    """Check ``0 ≤ value`` (``< upper`` when given) for a concrete real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a real number, got {type(value).__name__}"
        raise TypeError(msg)
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (upper is not None and v >= upper):
        bound = f"[0, {upper})" if upper is not None else "[0, ∞)"
        msg = f"{name} must lie in {bound}, got {value!r}"
        raise ValueError(msg)


def check_damping_or_schedule(damping: Any) -> None:
    """Check a damping γ > 0, or accept a callable schedule ``count -> γ``."""
    if callable(damping):
        return
    check_damping(damping)


def check_common(
    *,
    rank: Any,
    decay: Any,
    update_every: Any,
    reorthonormalize_every: Any = None,
    damping: Any = None,
    needs_damping: bool = False,
) -> None:
    """Check the options shared by every optimiser of this subpackage."""
    check_rank(rank)
    check_decay(decay)
    check_positive_int(update_every, "update_every")
    check_positive_int(reorthonormalize_every, "reorthonormalize_every", allow_none=True)
    if needs_damping:
        check_damping_or_schedule(damping)


def block_rank(dim: int, rank: int) -> int:
    """Rank used for a block of ``dim`` parameters: ``min(rank, dim − 1)`` (0 for a scalar block)."""
    return max(0, min(rank, dim - 1))


ScalarOrSchedule = float | Callable[[Any], Any]
