r"""Defaults and option checks shared by the optax and torch front-ends.

The defaults were chosen by measurement on the small-scale reproduction
(``python -m experiments.reproduce``); the docstring of :mod:`lowrank_ggn.optim`
says how, value by value.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from lowrank_ggn._core.checks import check_damping, check_decay
from lowrank_ggn._core.options import (
    DEFAULT_DAMPING,
    DEFAULT_DECAY,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MOMENTUM,
    DEFAULT_RANK,
    DEFAULT_REORTHONORMALIZE_EVERY,
    check_reorthonormalize_every,
)

__all__ = [
    "DEFAULT_DAMPING",
    "DEFAULT_DECAY",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MOMENTUM",
    "DEFAULT_RANK",
    "DEFAULT_REORTHONORMALIZE_EVERY",
    "block_rank",
    "check_common",
    "check_damping_or_schedule",
    "check_nonnegative",
    "check_positive_int",
    "check_rank",
]


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
    check_reorthonormalize_every(reorthonormalize_every)
    if needs_damping:
        check_damping_or_schedule(damping)


def block_rank(dim: int, rank: int) -> int:
    """Rank used for a block of ``dim`` parameters: ``min(rank, dim − 1)`` (0 for a scalar block)."""
    return max(0, min(rank, dim - 1))
