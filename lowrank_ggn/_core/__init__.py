"""The engine of lowrank_ggn: its declared internal API.

Every computation of the library lives here, in unchecked, namespace-first
functions (``f(xp, ...)``) over arrays and NamedTuple states. The public
modules validate and cast their arguments and call these; the approximation
protocol, the optimisers, the sharded front-ends and the studies call them
directly. No other module imports an underscore name from another module
(``tests/test_architecture.py`` enforces it): what is shared is declared here.

Every sum over the parameter axis is completed through ``reduce=``
(:class:`~lowrank_ggn._core.reduction.Reduction`), so one algorithm runs on one
device, on a JAX mesh (``lax.psum``) or under ``torch.distributed``
(``all_reduce``) by changing only how those sums are completed.

Modules (lowest first):

``aliases``
    Typing aliases (``Array``, ``ArrayNamespace``, ``DType``, ``Device``).
``reduction``
    :class:`Reduction`, :class:`AllReduce`, :data:`LOCAL`.
``options``
    One contract and one default per option (``reorthonormalize_every``,
    the optimiser defaults).
``checks``
    Argument and state checks that raise one-line errors naming the argument.
``kernels``
    Fused passes over a tall basis (blocked NumPy/PyTorch paths, donation).
``operator``
    ``γI + U diag(σ) Uᵀ``: solve, matvec, dense, the κ ↔ σ maps.
``brand``
    Brand's rank-one eigen-update planned on small arrays, CGS2,
    re-orthonormalisation.
``sherman_morrison``
    The Eq 17 step (corrected).
``ginger``
    Ginger's update, fused update + query, Sherman–Morrison path.
``product``
    Ginger in product form ``U = WQ``.
``qng``
    QNG's factor products and update.
``approximations``
    The approximation protocol: one object per method with ``init``,
    ``update``, ``update_precondition`` and ``operator``.

The package's own ``__init__`` imports nothing, so that the backends layer can
use ``aliases`` without a cycle.
"""

__all__: list[str] = []
