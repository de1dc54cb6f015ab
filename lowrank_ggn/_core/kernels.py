r"""Fused passes over a tall, skinny basis: the memory-bound loops of the Ginger update and query.

Three primitives, each reading the ``dim × n`` basis ``U`` once:

* :func:`project` — the reductions ``Uᵀ[v₁ … v_k]`` together with the
  products ``v₁ᵀv_j`` (``‖v₁‖²`` first);
* :func:`residual` — the Gram–Schmidt residual ``p̃ = v − U·c`` together
  with its own projection ``Uᵀp̃`` and ``[p̃ᵀp̃, p̃ᵀw]``: both passes of
  classical Gram–Schmidt twice (CGS2) in one read, the second one implicit;
* :func:`rotate` — ``U·R + v ⊗ b`` (a rotation of the basis plus a rank-one
  term) and, optionally, a query column ``η(g + U·a₀ + β₀ v) + U·a₁ + β₁ v``.

The generic path is plain array-API code (JAX fuses it under ``jax.jit``).
NumPy and PyTorch on the CPU get a blocked path instead: the rows are processed
in blocks of a few MiB, so that every block of ``U`` is read from memory once
and all the work on it is done while it is in cache, and no temporary of the
size of ``U`` is allocated. The blocked path stores its results column-major
(the transposed layout ``n × dim``, row-major), which makes every elementwise
operation on a block a long contiguous loop; callers see an ordinary
``dim × n`` array either way.
On JAX with a single device, large bases are rotated block by block in a
``lax.fori_loop`` that updates one buffer (in place when the caller donates it).
On JAX's CPU backend a basis of rank at most four is best handled as ``Uᵀ``
(:func:`preferred_view`): the callers transpose it once and pass ``rows=True``.
A vector may be given unformed as ``base · factor`` (:class:`Scaled`); the
blocked paths scale it block by block.

All of these are local to the rows they are given: on a basis split by rows
across devices, the partial results of :func:`project` are completed by one
all-reduce (:meth:`lowrank_ggn._core.reduction.Reduction.sum_together`), and
:func:`rotate` needs none.

``out=`` (NumPy and PyTorch only) writes the rotated basis into an existing
array, which may be ``U`` itself: each block is computed into a small scratch
buffer and copied back, so the update happens in place. This is the buffer
donation of :func:`lowrank_ggn.ginger_update_precondition` and friends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from lowrank_ggn._core.aliases import Array, ArrayNamespace
from lowrank_ggn.backends import device_of, is_jax, is_numpy, is_torch

__all__ = [
    "Scaled",
    "apply",
    "can_overwrite",
    "compress_rows",
    "fill_rows",
    "preferred_view",
    "project",
    "residual",
    "rotate",
    "scaled",
    "write_row",
]

# Bytes of one block of U: large enough that the per-block call overhead is a
# few per cent of the block's memory traffic, small enough to stay in cache.
_BLOCK_BYTES = 2**21
# Below this many elements of U, the blocked path's loop overhead is not worth it.
_MIN_BLOCKED = 2**16
# JAX on the CPU: up to this rank the passes run on Uᵀ (see preferred_view). Measured at dim = 10⁶, float32
# (benchmarks/step_cost.py --what fused): the fused step on Uᵀ took 0.4× the time at τ = 2 and 4, but
# 1.5–2.5× at τ = 8 and 16, where the blocked in-place rotation of U wins.
_ROWS_MAX_RANK = 4


def _blocked(xp: ArrayNamespace, basis: Array) -> str | None:
    """Return the blocked implementation to use for ``basis`` (``"numpy"``, ``"torch"``, ``"jax"``) or None."""
    if basis.shape[0] * basis.shape[1] < _MIN_BLOCKED:
        return None
    if is_numpy(xp):
        return "numpy"
    if is_torch(xp) and basis.device.type == "cpu" and not basis.requires_grad:
        return "torch"
    if (
        is_jax(xp)
        # A d×1 basis: XLA's loop over its blocks is five times slower than the plain product.
        and basis.shape[1] >= 2
        and basis.shape[0] >= 4 * _block_rows(basis, basis.shape[1])
        and _one_jax_device()
    ):
        return "jax"
    return None


def _kind(xp: ArrayNamespace, basis: Array, *others: object) -> str | None:
    """:func:`_blocked`, except that PyTorch inputs that require gradients take the generic path.

    The blocked PyTorch path writes into preallocated buffers (``out=``), which
    autograd does not support; the generic path is differentiable at every size.
    """
    kind = _blocked(xp, basis)
    if kind == "torch" and any(_requires_grad(x) for x in others):
        return None
    return kind


def _requires_grad(x: object) -> bool:
    if isinstance(x, (tuple, list)):
        return any(_requires_grad(y) for y in x)
    return bool(getattr(x, "requires_grad", False))


class Scaled(NamedTuple):
    """The vector ``base · factor``, not formed: the blocked kernels scale it block by block, in cache.

    Forming ``v = d/max|d|`` before the passes over ``U`` would cost a write and
    a read of a vector of size ``dim`` (half a pass over a rank-4 basis);
    :func:`project`, :func:`residual` and :func:`rotate` accept this in place
    of any of their vectors (the first of :func:`project`'s, ``v`` of
    :func:`residual`, ``vec`` of :func:`rotate`).
    """

    base: Array
    """(dim,): the unscaled vector."""
    factor: Array
    """0-d: the scale, in ``base``'s dtype."""


def scaled(xp: ArrayNamespace, basis: Array, base: Array, divisor: Array) -> Array | Scaled:
    """``base / divisor`` for the passes over ``basis``: a :class:`Scaled` where the blocked NumPy/PyTorch kernels run.

    Elsewhere the quotient itself (under ``jax.jit`` XLA fuses it into its consumers).
    """
    if _kind(xp, basis, base) in ("numpy", "torch"):
        return Scaled(base, 1 / divisor)
    return base / divisor


def _formed(x: Array | Scaled) -> Array:
    """The array a :class:`Scaled` stands for (formed), or ``x`` itself."""
    return x.base * x.factor if isinstance(x, Scaled) else x


def _slice(x: Array | Scaled, start: int, stop: int, scratch: Array) -> Array:
    """Rows ``start:stop`` of a vector; a :class:`Scaled` is scaled into ``scratch`` (NumPy or PyTorch)."""
    if not isinstance(x, Scaled):
        return x[start:stop]
    piece = scratch[: stop - start]
    if _is_numpy_array(piece):
        import numpy as np

        np.multiply(x.base[start:stop], x.factor, out=piece)
    else:
        import torch

        torch.mul(x.base[start:stop], x.factor, out=piece)
    return piece


def _is_numpy_array(x: object) -> bool:
    """Whether ``x`` is a NumPy array."""
    import numpy as np

    return isinstance(x, np.ndarray)


def _one_jax_device() -> bool:
    """Whether JAX sees a single device.

    With several, a traced basis may be split across them by XLA's sharding
    propagation, and the dynamic slices of the blocked loop would gather the
    whole of it on every device; the plain path keeps the rows where they are.
    (Under ``shard_map`` each device's rows are a local array, but a tracer
    does not say which case it is in, so the plain path is taken in both.)
    """
    import jax

    return jax.device_count() == 1


def _block_rows(basis: Array, extra_columns: int = 0) -> int:
    row_bytes = (basis.shape[1] + extra_columns + 2) * basis.dtype.itemsize
    return max(256, _BLOCK_BYTES // row_bytes)


def preferred_view(xp: ArrayNamespace, basis: Array) -> tuple[Array, bool]:
    """``(Uᵀ, True)`` where the passes over ``basis`` (shape ``(dim, n)``) run faster on ``Uᵀ``, else ``(U, False)``.

    Pass the two to the kernels as ``(basis, rows=rows)``. ``Uᵀ`` for JAX on the
    CPU at rank ≤ ``_ROWS_MAX_RANK``: XLA's CPU backend multiplies a tall, thin
    row-major ``dim × n`` matrix by a vector or a small matrix 5–10 times
    slower than it reads the matrix (measured at n = 4, dim = 2.6·10⁴ and 10⁶,
    float32: ``benchmarks/step_latency.py``); with ``Uᵀ`` in row-major layout
    each product is a contiguous dot product or sum of scaled rows, which it
    vectorises. The transposed copy of ``U`` (one read and one write) is paid
    back within the first product; under ``jax.jit`` the transposes of the
    same ``U`` are one.
    """
    rows = _prefers_rows(xp, basis)
    return (basis.T if rows else basis), rows


def _prefers_rows(xp: ArrayNamespace, basis: Array) -> bool:
    if not is_jax(xp) or basis.ndim != 2 or not 2 <= basis.shape[1] <= _ROWS_MAX_RANK:
        return False
    import jax

    return jax.default_backend() == "cpu"


def can_overwrite(xp: ArrayNamespace, basis: Array) -> bool:
    """Whether :func:`rotate` can write its result into ``basis`` itself (``out=basis``).

    True for writable NumPy arrays and CPU PyTorch tensors stored column-major
    (as the blocked path produces them) and large enough for the blocked path.
    """
    kind = _blocked(xp, basis)
    if kind == "numpy":
        return bool(basis.T.flags.c_contiguous and basis.flags.writeable)
    if kind == "torch":
        return bool(basis.T.is_contiguous())
    return False


def project(xp: ArrayNamespace, basis: Array, vectors: Sequence[Array], *, rows: bool = False) -> tuple[Array, Array]:
    r"""Return ``Uᵀ[v₁ … v_k]`` (shape ``(n, k)``) and the products ``v₁ᵀv_j`` (shape ``(k,)``).

    One read of ``U``; the products with the first vector (``‖v₁‖²`` first)
    come from the same pass on the blocked path. ``rows=True``: ``basis`` is
    given as ``Uᵀ`` (shape ``(n, dim)``, one column of U per row).
    """
    columns = basis.T if rows else basis
    kind = _kind(xp, columns, vectors)
    if kind == "numpy":
        return _project_numpy(columns, vectors)
    if kind == "torch":
        return _project_torch(columns, vectors)
    vectors = [_formed(v) for v in vectors]
    dots = xp.stack([xp.sum(vectors[0] * v) for v in vectors])
    if is_jax(xp):
        return _project_jax(xp, basis, vectors, rows=rows), dots
    # Both operands of the product in row-major layout (a transposed operand may be copied first).
    if rows:
        return basis @ xp.stack(list(vectors), axis=1), dots
    return (xp.stack(list(vectors), axis=0) @ basis).T, dots


def _project_jax(xp: ArrayNamespace, basis: Array, vectors: Sequence[Array], *, rows: bool) -> Array:
    """``Uᵀ[v₁ … v_k]`` in the forms XLA's CPU backend runs fastest (measured, d = 1e7, float32).

    ``Uᵀ`` given as rows, or one or two columns: one matrix-vector product per
    vector (3–10× faster than one product with the stacked vectors). More
    columns: one product contracting the first axis of the vectors stacked as
    columns with U, which XLA takes without a transposed copy.
    """
    n = basis.shape[0] if rows else basis.shape[1]
    if n <= 2 or rows:
        return xp.stack([basis @ v if rows else v @ basis for v in vectors], axis=1)
    from jax import lax

    return lax.dot_general(xp.stack(list(vectors), axis=1), basis, (((0,), (0,)), ((), ()))).T


def residual(
    xp: ArrayNamespace, basis: Array, v: Array, coef: Array, w: Array | None = None, *, rows: bool = False
) -> tuple[Array, Array, Array]:
    r"""Return ``p̃ = v − U·coef``, ``Uᵀp̃`` (shape ``(n,)``) and ``[p̃ᵀp̃, p̃ᵀw]`` (shape ``(2,)``).

    One read of ``U`` and one write of ``p̃``: on the blocked paths each block
    of ``p̃`` is projected back onto ``U`` while it is in cache. This is
    classical Gram–Schmidt twice with the second subtraction left implicit:
    ``p̃ − U(Uᵀp̃)`` is what the caller's rotation pass forms, and its squared
    norm is ``p̃ᵀp̃ − ‖Uᵀp̃‖²`` without cancellation, because ``p̃`` is already
    orthogonal to ``U`` up to rounding. Without ``w`` the second product is
    ``p̃ᵀp̃`` again. The sums are over this array's rows (partial sums of a
    row-split basis). ``rows=True``: ``basis`` is given as ``Uᵀ``.
    """
    columns = basis.T if rows else basis
    kind = _kind(xp, columns, v, coef, w)
    if kind == "numpy":
        return _residual_numpy(columns, v, coef, w)
    if kind == "torch":
        return _residual_torch(columns, v, coef, w)
    v = _formed(v)
    if rows:
        resid = v - coef @ basis
        back = basis @ resid
    else:
        # ``p̃ @ U`` rather than ``Uᵀ @ p̃``: the same product, in the layout XLA takes without a copy.
        resid = v - basis @ coef
        back = resid @ basis
    rr = xp.sum(resid * resid)
    return resid, back, xp.stack([rr, rr if w is None else xp.sum(resid * w)])


def rotate(
    xp: ArrayNamespace,
    basis: Array,
    rot: Array,
    vec: Array,
    vrot: Array,
    *,
    query: tuple[Array, Array, Array, Array] | None = None,
    out: Array | None = None,
    rows: bool = False,
) -> tuple[Array, Array | None]:
    r"""Return ``U·rot + vec ⊗ vrot`` and, when ``query = (a, β, g, η)`` is given, the query column.

    The query column is ``η·(g + U·a[:, 0] + β[0]·vec) + U·a[:, 1] + β[1]·vec``:
    the split form ``(g − U'c)/γ + U'(c/(γ+σ))`` of a damped solve, whose
    two terms are each finite whenever the answer is (the form
    ``g/γ + U'z`` overflows with ``g/γ`` although the answer is small).

    Parameters
    ----------
    xp : namespace
    basis : array, shape (dim, n)
        U (or ``Uᵀ``, shape (n, dim), with ``rows=True``).
    rot : array, shape (n, m)
    vec : array, shape (dim,)
    vrot : array, shape (m,)
    query : tuple, optional
        ``(a, beta, g, eta)`` with ``a`` of shape (n, 2), ``beta`` of shape
        (2,), ``g`` of shape (dim,) and 0-d ``eta``.
    out : array, optional
        NumPy/PyTorch only (see :func:`can_overwrite`): where to write the
        rotated basis, shape (dim, m); may be ``basis`` itself when ``m = n``.
    rows : bool
        ``basis`` is given as ``Uᵀ``.

    Returns
    -------
    tuple
        The rotated basis (dim, m) and the query column (dim,) or None.
    """
    columns = basis.T if rows else basis
    kind = _kind(xp, columns, rot, vec, vrot, query)
    if kind == "numpy":
        return _rotate_numpy(columns, rot, vec, vrot, query=query, out=out)
    if kind == "torch":
        return _rotate_torch(columns, rot, vec, vrot, query=query, out=out)
    if out is not None:
        msg = "out= is only supported by the NumPy and PyTorch CPU paths"
        raise ValueError(msg)
    vec = _formed(vec)
    if (
        kind == "jax"
        and not rows
        and rot.shape[0] == rot.shape[1]
        and basis.shape[0] >= _block_rows(basis, rot.shape[1])
    ):
        return _rotate_jax(basis, rot, vec, vrot, query)
    return _rotate_generic(xp, basis, rot, vec, vrot, query=query, rows=rows)


def _rotate_generic(
    xp: ArrayNamespace,
    basis: Array,
    rot: Array,
    vec: Array,
    vrot: Array,
    *,
    query: tuple[Array, Array, Array, Array] | None,
    rows: bool,
) -> tuple[Array, Array | None]:
    m = rot.shape[1]
    if rows:
        # One product (m [+1]) × n by n × dim: a single read of Uᵀ, row-major operands.
        coef = rot.T if query is None else xp.concat([rot.T, query[0].T], axis=0)
        # On JAX as a sum of scaled rows when a query comes along (one fusion, 2× faster than the product); the
        # rotation alone as the product: as a sum XLA fuses the computation of the small coefficients (the
        # eigenvectors' selects and products) into the loop over U and repeats it for every row (4× slower).
        both = _rows_combination(coef, basis) if is_jax(xp) and query is not None else coef @ basis
        new = both[:m, ...].T + vec[:, None] * vrot[None, :]
        if query is None:
            return new, None
        _, beta, g, eta = query
        return new, _query_column(both[m, ...], both[m + 1, ...], beta, vec=vec, g=g, eta=eta)
    if query is None:
        return basis @ rot + vec[:, None] * vrot[None, :], None
    a, beta, g, eta = query
    # One product n × (m + 2): a single read of U for the rotation and the query.
    both = basis @ xp.concat([rot, a], axis=1)
    new = both[:, :m] + vec[:, None] * vrot[None, :]
    return new, _query_column(both[:, m], both[:, m + 1], beta, vec=vec, g=g, eta=eta)


def _rows_combination(coef: Array, rows: Array) -> Array:
    """``coef @ rows`` for a small ``coef`` (k, n), written as a sum of n scaled rows.

    XLA's CPU backend fuses the sum into one loop, which it runs about twice
    as fast as the product (measured at n = 4, dim = 10⁶, float32); beyond
    ``_ROWS_MAX_RANK`` rows, the product.
    """
    if rows.shape[0] > _ROWS_MAX_RANK:
        return coef @ rows
    return sum(coef[:, j : j + 1] * rows[j : j + 1, :] for j in range(rows.shape[0]))


def _query_column(u0: Array, u1: Array, beta: Array, *, vec: Array, g: Array, eta: Array) -> Array:
    """``η(g + u₀ + β₀ vec) + u₁ + β₁ vec`` (``u_j = U a_j``)."""
    return eta * (g + u0 + beta[0] * vec) + (u1 + beta[1] * vec)


def apply(xp: ArrayNamespace, basis: Array, coef: Array, vec: Array, scale: Array, *, rows: bool = False) -> Array:
    r"""Return ``scale·(vec − U·coef[:, 0]) + U·coef[:, 1]`` for ``vec`` of shape (dim,), ``coef`` (n, 2).

    One read of ``U`` (``basis`` is ``Uᵀ`` when ``rows``). This is the split
    form of a damped solve, ``(g − Uc)/γ + U(c/(γ+σ))``: unlike
    ``g/γ + U z``, neither term overflows when the answer is finite, however
    small ``γ`` is.
    """
    if rows and is_jax(xp):
        both = _rows_combination(coef.T, basis)
    else:
        both = coef.T @ basis if rows else (basis @ coef).T  # (2, dim)
    return scale * (vec - both[0, ...]) + both[1, ...]


def write_row(xp: ArrayNamespace, a: Array, index: Array, row: Array, *, in_place: bool) -> Array:
    """Return ``a`` with row ``index`` replaced by ``row``.

    JAX: ``a.at[index].set(row)`` (in place when the caller donates ``a`` to
    ``jax.jit``). Other backends: written into ``a`` itself when ``in_place``,
    else into a copy.
    """
    if is_jax(xp):
        return a.at[index].set(row)
    out = a if in_place else _copy(xp, a)
    out[int(index), ...] = row
    return out


def compress_rows(xp: ArrayNamespace, buffer: Array, count: int | None, coef: Array, *, in_place: bool) -> Array:
    """Return the buffer with rows ``[:k]`` set to ``coefᵀ·buffer[:count]`` and the other rows zeroed.

    ``coef`` has shape (count, k) (``count`` is the buffer's length when None).
    With ``in_place`` on the blocked NumPy/PyTorch paths the product is written
    block by block into the buffer itself (no temporary of k rows);
    otherwise as :func:`fill_rows`.
    """
    live = buffer if count is None else buffer[:count, ...]
    k = coef.shape[1]
    if in_place and can_overwrite(xp, buffer.T):
        dim = buffer.shape[1]
        zero = xp.zeros((dim,), dtype=buffer.dtype, device=device_of(buffer))
        rotate(
            xp,
            live,
            coef,
            zero,
            xp.zeros((k,), dtype=buffer.dtype, device=device_of(buffer)),
            out=buffer[:k, ...].T,
            rows=True,
        )
        buffer[k:, ...] = 0
        return buffer
    return fill_rows(xp, buffer, coef.T @ live, in_place=in_place)


def fill_rows(xp: ArrayNamespace, a: Array, rows: Array, *, in_place: bool) -> Array:
    """Return ``a`` with its first ``k = rows.shape[0]`` rows replaced by ``rows`` and the others zeroed.

    In place when ``in_place`` (NumPy, PyTorch, CuPy); otherwise a new array
    (JAX reuses the buffer of a donated ``a``).
    """
    k = rows.shape[0]
    if in_place and not is_jax(xp):
        a[:k, ...] = rows
        a[k:, ...] = 0
        return a
    zeros = xp.zeros((a.shape[0] - k, *a.shape[1:]), dtype=a.dtype, device=device_of(a))
    return xp.concat([rows, zeros], axis=0)


def _copy(xp: ArrayNamespace, a: Array) -> Array:
    if is_torch(xp):
        return a.clone()
    return xp.asarray(a, copy=True)


# -- NumPy ----------------------------------------------------------------------------------


def _project_numpy(basis: Array, vectors: Sequence[Array]) -> tuple[Array, Array]:
    import numpy as np

    dim, n = basis.shape
    k = len(vectors)
    # Partial sums of each block are accumulated in float64: ‖v₁‖² in particular
    # then carries the rounding error of one block, not of all of d.
    coef = np.zeros((n, k))
    dots = np.zeros(k)
    step = _block_rows(basis)
    scratch = np.empty(step, dtype=basis.dtype) if isinstance(vectors[0], Scaled) else None
    for start in range(0, dim, step):
        stop = min(start + step, dim)
        block = basis[start:stop].T
        first = _slice(vectors[0], start, stop, scratch)
        for j, v in enumerate(vectors):
            piece = first if j == 0 else v[start:stop]
            coef[:, j] += block @ piece
            dots[j] += np.dot(first, piece)
    return coef.astype(basis.dtype), dots.astype(basis.dtype)


def _residual_numpy(basis: Array, v: Array, coef: Array, w: Array | None) -> tuple[Array, Array, Array]:
    import numpy as np

    dim, n = basis.shape
    dtype = basis.dtype
    coef = np.asarray(coef, dtype=dtype)
    resid = np.empty(dim, dtype=dtype)
    # As in _project_numpy: the partial sums of the blocks are accumulated in float64.
    back = np.zeros(n)
    dots = np.zeros(2)
    step = _block_rows(basis)
    scratch = np.empty(step, dtype=dtype) if isinstance(v, Scaled) else None
    for start in range(0, dim, step):
        stop = min(start + step, dim)
        block = basis[start:stop].T  # (n, width)
        piece = resid[start:stop]
        np.matmul(coef, block, out=piece)
        np.subtract(_slice(v, start, stop, scratch), piece, out=piece)
        back += block @ piece
        dots[0] += np.dot(piece, piece)
        if w is not None:
            dots[1] += np.dot(piece, w[start : start + step])
    if w is None:
        dots[1] = dots[0]
    return resid, back.astype(dtype), dots.astype(dtype)


def _rotate_numpy(
    basis: Array,
    rot: Array,
    vec: Array | Scaled,
    vrot: Array,
    *,
    query: tuple[Array, Array, Array, Array] | None,
    out: Array | None,
) -> tuple[Array, Array | None]:
    import numpy as np

    dim, n = basis.shape
    m = rot.shape[1]
    dtype = basis.dtype
    # Column-major result: its transpose (m × dim) is row-major and each block a long loop.
    out_t = np.empty((m, dim), dtype=dtype) if out is None else out.T
    # Each block of U is copied with its rows of vec into a small stack [Uᵀ; vecᵀ] (in cache), and one product
    # [Rᵀ b] · stack writes the rotated block: in place too, since the product reads the copy.
    coef = np.concatenate([np.asarray(rot, dtype=dtype).T, np.asarray(vrot, dtype=dtype)[:, None]], axis=1)
    step = _block_rows(basis, m)
    stack = np.empty((n + 1, step), dtype=dtype)
    y = None
    if query is not None:
        a, beta, g, eta = query
        # The query's two columns U a_j + β_j vec from the same stack; y = η(g + col₀) + col₁ (the split form).
        coef_q = np.concatenate([np.asarray(a, dtype=dtype).T, np.asarray(beta, dtype=dtype)[:, None]], axis=1)
        eta = dtype.type(eta)
        y = np.empty(dim, dtype=dtype)
        two = np.empty((2, step), dtype=dtype)
    for start in range(0, dim, step):
        stop = min(start + step, dim)
        width = stop - start
        rows = stack[:, :width]
        rows[:n] = basis[start:stop].T  # U's block is read from memory once, then used from cache
        if isinstance(vec, Scaled):
            np.multiply(vec.base[start:stop], vec.factor, out=rows[n])
        else:
            rows[n] = vec[start:stop]
        if y is not None:
            cols = two[:, :width]
            np.matmul(coef_q, rows, out=cols)
            yb = y[start:stop]
            np.add(cols[0], g[start:stop], out=yb)
            yb *= eta
            yb += cols[1]
        np.matmul(coef, rows, out=out_t[:, start:stop])
    return out_t.T, y


# -- PyTorch --------------------------------------------------------------------------------


def _project_torch(basis: Array, vectors: Sequence[Array]) -> tuple[Array, Array]:
    import torch

    dim, n = basis.shape
    k = len(vectors)
    coef = torch.zeros((n, k), dtype=torch.float64, device=basis.device)
    dots = torch.zeros(k, dtype=torch.float64, device=basis.device)
    step = _block_rows(basis)
    scratch = torch.empty(step, dtype=basis.dtype, device=basis.device) if isinstance(vectors[0], Scaled) else None
    for start in range(0, dim, step):
        stop = min(start + step, dim)
        block = basis[start:stop].T
        first = _slice(vectors[0], start, stop, scratch)
        for j, v in enumerate(vectors):
            piece = first if j == 0 else v[start:stop]
            coef[:, j] += torch.mv(block, piece)
            dots[j] += torch.dot(first, piece)
    return coef.to(basis.dtype), dots.to(basis.dtype)


def _residual_torch(basis: Array, v: Array, coef: Array, w: Array | None) -> tuple[Array, Array, Array]:
    import torch

    dim, n = basis.shape
    resid = torch.empty(dim, dtype=basis.dtype, device=basis.device)
    back = torch.zeros(n, dtype=torch.float64, device=basis.device)
    dots = torch.zeros(2, dtype=torch.float64, device=basis.device)
    step = _block_rows(basis)
    scratch = torch.empty(step, dtype=basis.dtype, device=basis.device) if isinstance(v, Scaled) else None
    for start in range(0, dim, step):
        stop = min(start + step, dim)
        block = basis[start:stop]  # (width, n)
        piece = resid[start:stop]
        torch.mv(block, coef, out=piece)
        torch.sub(_slice(v, start, stop, scratch), piece, out=piece)
        back += torch.mv(block.T, piece)
        dots[0] += torch.dot(piece, piece)
        if w is not None:
            dots[1] += torch.dot(piece, w[start : start + step])
    if w is None:
        dots[1] = dots[0]
    return resid, back.to(basis.dtype), dots.to(basis.dtype)


def _rotate_torch(
    basis: Array,
    rot: Array,
    vec: Array,
    vrot: Array,
    *,
    query: tuple[Array, Array, Array, Array] | None,
    out: Array | None,
) -> tuple[Array, Array | None]:
    import torch

    dim = basis.shape[0]
    m = rot.shape[1]
    dtype, dev = basis.dtype, basis.device
    out_t = torch.empty((m, dim), dtype=dtype, device=dev) if out is None else out.T
    in_place = out is not None and out.untyped_storage().data_ptr() == basis.untyped_storage().data_ptr()
    rot_t = rot.T.contiguous()
    step = _block_rows(basis, m)
    work = torch.empty((m, step), dtype=dtype, device=dev) if in_place else None
    y = None
    if query is not None:
        a, beta, g, eta = query
        y = torch.empty(dim, dtype=dtype, device=dev)
        beta0, beta1, eta = float(beta[0]), float(beta[1]), float(eta)
        # Both operands row-major (aᵀ and the block of Uᵀ): the product a GEMM runs at speed; with the block
        # as the left operand (width × n, column-major) it took 3× longer than the rotation's product.
        a_t = a.T.contiguous()
        two = torch.empty((2, step), dtype=dtype, device=dev)
    scratch = torch.empty(step, dtype=dtype, device=dev) if isinstance(vec, Scaled) else None
    for start in range(0, dim, step):
        stop = min(start + step, dim)
        width = stop - start
        block = basis[start:stop].T  # (n, width)
        v = _slice(vec, start, stop, scratch)
        if y is not None:
            # y = η(g + U a₀ + β₀ v) + U a₁ + β₁ v, block by block.
            yb = y[start:stop]
            ua = two[:, :width]
            torch.mm(a_t, block, out=ua)
            torch.add(ua[0], g[start:stop], out=yb)
            yb.add_(v, alpha=beta0).mul_(eta).add_(ua[1]).add_(v, alpha=beta1)
        target = work[:, :width] if work is not None else out_t[:, start:stop]
        torch.mm(rot_t, block, out=target)
        target.addr_(vrot, v)
        if work is not None:
            out_t[:, start:stop].copy_(target)
    return out_t.T, y


# -- JAX ------------------------------------------------------------------------------------


def _rotate_jax(
    basis: Array,
    rot: Array,
    vec: Array,
    vrot: Array,
    query: tuple[Array, Array, Array, Array] | None,
) -> tuple[Array, Array | None]:
    """Rotate the basis block by block in a ``lax.fori_loop``, in place.

    Each block is sliced, rotated and written back with ``dynamic_update_slice``,
    so XLA keeps one buffer for the loop: no d×τ temporary, and when the caller
    donates the basis to ``jax.jit`` the result is written into it.
    """
    import jax.numpy as jnp
    from jax import lax

    dim = basis.shape[0]
    step = _block_rows(basis, rot.shape[1])
    full = dim // step

    def rows(u: Array, v: Array, g: Array | None) -> tuple[Array, Array | None]:
        new = u @ rot + v[:, None] * vrot[None, :]
        if query is None:
            return new, None
        a, beta, _, eta = query
        ua = u @ a
        return new, eta * (g + ua[:, 0] + beta[0] * v) + (ua[:, 1] + beta[1] * v)

    g_all = None if query is None else query[2]

    def body(i: Array, carry: tuple[Array, Array | None]) -> tuple[Array, Array | None]:
        u, y = carry
        start = i * step
        block = lax.dynamic_slice_in_dim(u, start, step, axis=0)
        v = lax.dynamic_slice_in_dim(vec, start, step)
        g = None if g_all is None else lax.dynamic_slice_in_dim(g_all, start, step)
        new, yb = rows(block, v, g)
        u = lax.dynamic_update_slice_in_dim(u, new, start, axis=0)
        if yb is not None and y is not None:
            y = lax.dynamic_update_slice_in_dim(y, yb, start, axis=0)
        return u, y

    y0 = None if query is None else jnp.zeros((dim,), dtype=basis.dtype)
    u, y = lax.fori_loop(0, full, body, (basis, y0))
    tail = full * step
    if tail < dim:
        # The loop left these rows alone: read them from the loop's buffer, not from
        # `basis`, so that XLA can run the loop in the (donated) input buffer.
        new, yb = rows(u[tail:], vec[tail:], None if g_all is None else g_all[tail:])
        u = u.at[tail:].set(new)
        if yb is not None:
            y = y.at[tail:].set(yb)
    return u, y
