r"""lowrank_ggn: low-rank curvature (GGN / Fisher) approximations for second-order optimisation.

Exact, backend-agnostic implementations of Ginger (a rank-τ eigendecomposition
of the EMA of the curvature) and QNG (products of rank-one factors), of the
primitives they are built from, and of the dense references they are tested
against. Every function is pure, follows the array API standard (NumPy, JAX,
PyTorch, CuPy, array-api-strict) and runs under ``jax.jit``.

>>> import numpy as np
>>> import lowrank_ggn as lg
>>> state = lg.ginger_init(1000, 8)
>>> d = np.random.default_rng(0).standard_normal(1000)
>>> state = lg.ginger_update(state, d, decay=0.99)
>>> step = lg.ginger_precondition(state, d, damping=1e-3)
"""

from lowrank_ggn._approximation import (
    QNG,
    Approximation,
    Diagonal,
    DiagonalState,
    FactorProduct,
    FrequentDirections,
    Ginger,
    GingerDiagonal,
    GingerDiagonalState,
    GingerProduct,
    Nystrom,
    NystromState,
    diagonal,
    frequent_directions,
    ginger,
    ginger_diagonal,
    ginger_product,
    nystrom,
    qng,
)
from lowrank_ggn._eigen_update import RankOneUpdate, lowrank_eigh_update, reorthonormalize
from lowrank_ggn._ginger import (
    GingerState,
    ginger_dense,
    ginger_init,
    ginger_precondition,
    ginger_reorthonormalize,
    ginger_update,
    ginger_update_precondition,
)
from lowrank_ggn._operator import (
    DampedLowRank,
    damped_dense,
    damped_matvec,
    damped_solve,
    kappa_from_sigma,
    sigma_from_kappa,
)
from lowrank_ggn._product import (
    GingerProductState,
    ginger_product_compress,
    ginger_product_dense,
    ginger_product_from_state,
    ginger_product_init,
    ginger_product_precondition,
    ginger_product_to_state,
    ginger_product_update,
    ginger_product_update_precondition,
)
from lowrank_ggn._qng import (
    QNGState,
    qng_dense,
    qng_factor_matvec,
    qng_factor_solve,
    qng_init,
    qng_precondition,
    qng_update,
)
from lowrank_ggn._reference import best_rank_k, damped_inverse_dense, ema_dense, ema_update_dense
from lowrank_ggn._sherman_morrison import ShermanMorrisonStep, sherman_morrison_step
from lowrank_ggn._version import __version__
from lowrank_ggn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_manifest, save_checkpoint

__all__ = [
    "QNG",
    "Approximation",
    "CheckpointError",
    "DampedLowRank",
    "Diagonal",
    "DiagonalState",
    "FactorProduct",
    "FrequentDirections",
    "Ginger",
    "GingerDiagonal",
    "GingerDiagonalState",
    "GingerProduct",
    "GingerProductState",
    "GingerState",
    "Nystrom",
    "NystromState",
    "QNGState",
    "RankOneUpdate",
    "ShermanMorrisonStep",
    "__version__",
    "best_rank_k",
    "damped_dense",
    "damped_inverse_dense",
    "damped_matvec",
    "damped_solve",
    "diagonal",
    "ema_dense",
    "ema_update_dense",
    "frequent_directions",
    "ginger",
    "ginger_dense",
    "ginger_diagonal",
    "ginger_init",
    "ginger_precondition",
    "ginger_product",
    "ginger_product_compress",
    "ginger_product_dense",
    "ginger_product_from_state",
    "ginger_product_init",
    "ginger_product_precondition",
    "ginger_product_to_state",
    "ginger_product_update",
    "ginger_product_update_precondition",
    "ginger_reorthonormalize",
    "ginger_update",
    "ginger_update_precondition",
    "kappa_from_sigma",
    "load_checkpoint",
    "lowrank_eigh_update",
    "nystrom",
    "qng",
    "qng_dense",
    "qng_factor_matvec",
    "qng_factor_solve",
    "qng_init",
    "qng_precondition",
    "qng_update",
    "read_checkpoint_manifest",
    "reorthonormalize",
    "save_checkpoint",
    "sherman_morrison_step",
    "sigma_from_kappa",
]
