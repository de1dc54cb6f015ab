"""Options shared by every face of the library: one contract and one default each.

Every entry point that takes ``reorthonormalize_every`` — the flat functions,
the approximation protocol, the optimisers and the sharded front-ends —
resolves it here, so it means the same everywhere: a positive integer k (after
every k-th accepted update), ``"auto"`` (every
:data:`AUTO_REORTHONORMALIZE_FLOAT32` updates for a float32 state, never for
float64) or ``None`` (never). The reasons for the period are on the
reliability page of the documentation.

The optimiser defaults (rank, decay, damping, momentum, learning rate) are
documented, with how they were chosen, on the optimisers page.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = [
    "AUTO_REORTHONORMALIZE_FLOAT32",
    "DEFAULT_DAMPING",
    "DEFAULT_DECAY",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_MOMENTUM",
    "DEFAULT_RANK",
    "DEFAULT_REORTHONORMALIZE_EVERY",
    "check_bool",
    "check_reorthonormalize_every",
    "resolve_reorthonormalize_every",
]

AUTO_REORTHONORMALIZE_FLOAT32 = 100
"""Re-orthonormalisation period that ``"auto"`` gives a float32 state (float64: never)."""

DEFAULT_REORTHONORMALIZE_EVERY = "auto"
"""The default of every ``reorthonormalize_every`` option."""

DEFAULT_DECAY = 0.99
DEFAULT_RANK = 4
DEFAULT_DAMPING = 1.0
DEFAULT_MOMENTUM = 0.9
DEFAULT_LEARNING_RATE = 0.1


def check_reorthonormalize_every(every: Any) -> int | str | None:
    """Check ``reorthonormalize_every``: a positive integer (NumPy integers too), ``"auto"`` or None.

    Returns
    -------
    int, "auto" or None
        The value, integers as Python ``int``.

    Raises
    ------
    ValueError
        For anything else, naming the option.
    """
    if every is None or (isinstance(every, str) and every == "auto"):
        return every
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or int(every) < 1:
        msg = f"reorthonormalize_every must be a positive integer, 'auto' or None, got {every!r}"
        raise ValueError(msg)
    return int(every)


def resolve_reorthonormalize_every(xp: Any, dtype: Any, every: Any) -> int | None:
    """Check ``reorthonormalize_every`` and resolve ``"auto"`` for a state of ``dtype`` in namespace ``xp``."""
    every = check_reorthonormalize_every(every)
    if every == "auto":
        return AUTO_REORTHONORMALIZE_FLOAT32 if xp.finfo(dtype).bits < 64 else None
    return every  # type: ignore[return-value]


def check_bool(value: Any, name: str) -> bool:
    """Check that ``value`` is a ``bool`` (for flags such as ``donate``)."""
    if not isinstance(value, bool):
        msg = f"{name} must be a bool, got {type(value).__name__}"
        raise TypeError(msg)
    return value
