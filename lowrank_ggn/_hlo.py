"""Collective operations of a compiled XLA program, read from its HLO text.

Used to check what a sharded program communicates: every all-reduce,
all-gather, reduce-scatter, all-to-all and collective permute, with the shapes
and size of its result, and whether it sits in a loop body (then it runs once
per iteration) or in a branch of a conditional (then it may not run at all).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = ["Collective", "collectives"]

_KINDS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "ragged-all-to-all",
    "collective-permute",
    "collective-broadcast",
)
# Asynchronous collectives appear as a start/done pair; the done op's result is the output.
_ASYNC = {f"{k}-done": k for k in ("all-reduce", "all-gather", "collective-permute")}
_SKIP = {f"{k}-start" for k in ("all-reduce", "all-gather", "collective-permute")}

_COMPUTATION = re.compile(r"^(ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%(\S+)\s*=\s*(.+?)\s+([a-z][a-z0-9-]*)\(")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]+m[0-9]+[a-z]*)?)\[([0-9,]*)\]")
_SINGLE_CALLEE = re.compile(r"\b(body|condition|true_computation|false_computation|calls|to_apply)=%([^\s,)}]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")

_ITEMSIZE = {
    "pred": 1,
    "s4": 1,
    "u4": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}


class Collective(NamedTuple):
    """One collective operation of a compiled program.

    Parameters
    ----------
    kind, shapes, nbytes, in_loop, in_conditional, computation : object
        The fields, in this order (see the attributes below).
    """

    kind: str
    """The operation: ``"all-reduce"``, ``"all-gather"``, ``"reduce-scatter"``, ...."""
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    """``(dtype, shape)`` of each array of the result (several when XLA combined collectives)."""
    nbytes: int
    """Bytes of the result on one device: for an all-reduce, the payload that is summed."""
    in_loop: bool
    """True when the operation is in the body of a ``while`` loop (it runs once per iteration)."""
    in_conditional: bool
    """True when the operation is in a branch of a conditional (it runs only when that branch does)."""
    computation: str
    """Name of the HLO computation that contains it."""


def _itemsize(dtype: str) -> int:
    if dtype in _ITEMSIZE:
        return _ITEMSIZE[dtype]
    if dtype.startswith("f8"):
        return 1
    msg = f"unknown HLO element type {dtype!r}"
    raise ValueError(msg)


def _shapes(type_text: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(
        (dtype, tuple(int(n) for n in dims.split(",") if n))
        for dtype, dims in _ARRAY.findall(type_text)
        if dtype != "token"
    )


def _nbytes(shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> int:
    total = 0
    for dtype, dims in shapes:
        count = 1
        for n in dims:
            count *= n
        total += count * _itemsize(dtype)
    return total


def collectives(compiled: Any) -> list[Collective]:
    """Return the collective operations of a compiled XLA program.

    Parameters
    ----------
    compiled : jax.stages.Compiled or str
        A compiled program (``jax.jit(f).lower(*args).compile()``) or its HLO
        text (``compiled.as_text()``).

    Returns
    -------
    list of Collective
        In program text order. A collective in a loop body runs once per
        iteration; one in a conditional branch runs at most once per call.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from lowrank_ggn.sharding import collectives
    >>> compiled = jax.jit(jnp.sum).lower(jnp.ones(8)).compile()
    >>> collectives(compiled)  # one device: nothing to communicate
    []
    """
    text = compiled if isinstance(compiled, str) else compiled.as_text()
    found: list[tuple[str, str, str]] = []  # (computation, kind, result type)
    callees: dict[str, list[tuple[str, str]]] = {}  # computation -> [(edge kind, callee)]
    entry, current = "", ""
    for line in text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            current = head.group(2)
            callees.setdefault(current, [])
            if head.group(1):
                entry = current
            continue
        inst = _INSTRUCTION.match(line)
        if not inst or not current:
            continue
        _, type_text, op = inst.groups()
        if op in _KINDS or op in _ASYNC:
            found.append((current, _ASYNC.get(op, op), type_text))
        elif op in _SKIP:
            continue
        edges = callees[current]
        edges += [(edge, name) for edge, name in _SINGLE_CALLEE.findall(line)]
        for group in _BRANCHES.findall(line):
            edges += [("branch", name.strip().lstrip("%")) for name in group.split(",") if name.strip()]
    flags = _context_flags(entry, callees)
    out = []
    for comp, kind, type_text in found:
        shapes = _shapes(type_text)
        in_loop, in_cond = flags.get(comp, (False, False))
        out.append(Collective(kind, shapes, _nbytes(shapes), in_loop, in_cond, comp))
    return out


def _context_flags(entry: str, callees: dict[str, list[tuple[str, str]]]) -> dict[str, tuple[bool, bool]]:
    """For each computation reachable from ``entry``: (inside a loop, inside a conditional branch)."""
    flags: dict[str, tuple[bool, bool]] = {}
    stack = [(entry, False, False)]
    while stack:
        name, loop, branch = stack.pop()
        old = flags.get(name)
        new = (loop or (old[0] if old else False), branch or (old[1] if old else False))
        if old == new:
            continue
        flags[name] = new
        for edge, callee in callees.get(name, []):
            stack.append(
                (
                    callee,
                    new[0] or edge in ("body", "condition"),
                    new[1] or edge in ("branch", "true_computation", "false_computation"),
                )
            )
    return flags
