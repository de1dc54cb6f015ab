r"""Sweeps: run every method on every stream and record the metrics over time and over the settings grid.

One pass over a stream (one stream, one seed) advances, in lockstep, the exact
EMA for every decay α and every stateful method for every setting of the grid
(rank τ, decay α, dtype; the Sherman–Morrison path also for every damping γ,
since its state depends on γ). The eigen-path Ginger state does not depend on
γ, so every damping of the grid, and the tail-aware variants, are queries of
the same state.

Metrics are evaluated

* at ``checkpoints`` evenly spaced steps for the *default setting* (τ, α, γ of
  the config): the time series;
* at the last step for every setting of the grid.

Two comparisons are recorded (column ``damping_mode``):

``fixed``
    every method at damping γ against the exact :math:`(\gamma I + M)^{-1}`;
    QNG keeps its implicit damping :math:`\alpha^k`.
``equal``
    γ = :math:`\alpha^{\min(\tau, t)}`, QNG's implicit damping, for every
    method and for the reference :math:`(\alpha^\tau I + M)^{-1}`: the same
    form "α^τ I + rank τ" for Ginger and QNG, so that only the choice of the
    subspace differs. This is the comparison the paper's claim (Observation 1
    and §2.3: Ginger keeps the optimal low-rank part where QNG does not) is
    about.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lowrank_ggn.backends import namespace_by_name, to_numpy
from lowrank_ggn.studies._methods import (
    DENSE_LIMIT,
    METHODS,
    DiagonalRun,
    ExactEMA,
    GingerRun,
    IsotropicRun,
    ProtocolRun,
    QNGRun,
    Structured,
    protocol_templates,
)
from lowrank_ggn.studies._metrics import (
    ExactSpectrum,
    captured_share,
    cosine,
    decrease_fraction,
    principal_angles,
    relative_spectral_distance,
    spectral_error,
)
from lowrank_ggn.studies._oracle import WindowEMA, WindowReduction
from lowrank_ggn.studies._streams import (
    LARGE_STREAMS,
    STREAMS,
    StreamStep,
    large_stream_blocks,
    make_large_stream,
    make_stream,
    stream_dim,
)

__all__ = ["COLUMNS", "StudyConfig", "StudyResult", "UserStream", "run_study"]

COLUMNS = (
    "stream",
    "dim",
    "seed",
    "backend",
    "dtype",
    "method",
    "rank",
    "decay",
    "damping_mode",
    "damping",
    "effective_damping",
    "step",
    "loss",
    "inv_spectral_error",
    "curv_spectral_error",
    "angle_max_deg",
    "subspace_overlap",
    "cosine",
    "decrease_fraction",
    "captured_share",
    "represented_share",
    "lambda_next",
    "eckart_young_bound",
    "trace_gap",
    "dev_from_ginger64",
    "sigma_relerr",
    "nonfinite",
    "rho_certificate",
    "certificate_tightness",
    "memory_floats",
    "time_per_step_s",
    "time_vs_diag",
)
"""Columns of the study's CSV, in order (one row per method × setting × step).

Identification (``stream`` … ``step``, ``loss``), the metrics (``inv_spectral_error``
… ``represented_share``), the Eckart–Young reference (``lambda_next``,
``eckart_young_bound``), consistency checks of Ginger (``trace_gap``,
``dev_from_ginger64``, ``sigma_relerr``, ``nonfinite``), the ρ certificate of a
method whose state carries one (``rho_certificate``: ρ = ``discarded``, with
‖G̃ − G‖₂ ≤ ρ at equal damping; ``certificate_tightness``: the true ‖G̃ − G‖₂ / ρ,
at most 1), the memory of the method's state (``memory_floats``, floating-point
numbers; summed over the blocks of a per-tensor stream) and timings; the
report written by :func:`markdown_report` defines each one. A cell that does
not apply to a row is NaN (or empty for ``rank``).
"""


_FINITE_CHUNK = 1 << 22
"""Numbers checked per chunk when scanning a stream for non-finite values (bounds the memory of the check)."""


class UserStream:
    r"""A curvature stream supplied by the user: T vectors of dimension d, in order.

    Step t (from 1) of the study folds :math:`d_t = x_t`, the t-th vector,
    into every method, and preconditions :math:`g_t = x_{(t \bmod T) + 1}`,
    the *next* vector of the stream (the first one after the last): a vector
    of the same distribution that is not yet part of the EMA, as the
    independent draw of the synthetic streams. The loss is NaN. A study uses
    the first ``steps`` vectors, so a stream needs at least ``steps`` of them;
    since the stream does not depend on the seed, it runs once, with the
    first seed of the study.

    Parameters
    ----------
    name : str
        The name in the ``stream`` column; not one of the built-in
        :data:`~lowrank_ggn.studies.STREAMS`.
    data : str, os.PathLike, numpy.ndarray or iterable of vectors
        A path to a ``.npy`` file holding a (T, d) array of real floats, which
        is memory-mapped (``numpy.load(path, mmap_mode="r")``) and read one
        row per step; a (T, d) array of real numbers, kept as it is (a
        ``numpy.memmap`` stays mapped); or any other iterable of T vectors of
        length d, read once into a float64 array at construction.

    Raises
    ------
    ValueError
        If ``name`` is empty or a built-in stream, the file does not exist,
        is not a ``.npy`` file or cannot be read, the data are not 2-D with
        T ≥ 1 and d ≥ 2, or any entry is NaN or infinite (the whole stream is
        scanned, in chunks, at construction).
    TypeError
        If ``name`` is not a string, or the data are not real numbers (a file:
        not real floats).

    Notes
    -----
    Construction reads the whole stream once (the finiteness check), O(T d)
    time and O(min(T d, 4·10⁶)) extra memory. A stream read from a file
    pickles as its path (worker processes map the file again); an in-memory
    array pickles as its data.
    """

    def __init__(self, name: str, data: Any) -> None:
        if not isinstance(name, str):
            msg = f"the stream name must be a string, got {type(name).__name__}"
            raise TypeError(msg)
        if not name or name in STREAMS or name in LARGE_STREAMS:
            msg = (
                "a user stream needs a name that is not empty and not one of "
                f"{(*STREAMS, *LARGE_STREAMS)}, got {name!r}"
            )
            raise ValueError(msg)
        self.name = name
        self._path: Path | None = None
        self._array: np.ndarray | None = None
        if isinstance(data, str | os.PathLike):
            self._path = Path(data)
            array = self._load(self._path)
        elif isinstance(data, np.ndarray):
            array = data
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                msg = f"user stream {name!r} must hold real numbers, got dtype {array.dtype}"
                raise TypeError(msg)
            self._array = array
        else:
            try:
                array = np.asarray([np.asarray(v, dtype=np.float64) for v in data])
            except (TypeError, ValueError) as err:
                msg = f"user stream {name!r} must be a (T, d) array, a .npy path or an iterable of vectors ({err})"
                raise TypeError(msg) from None
            self._array = array
        self._check(array, f"user stream {name!r}")
        self.length, self.dim = (int(n) for n in array.shape)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> UserStream:
        """Return the stream of a ``.npy`` file, named by the file's stem (``runs/fisher.npy`` → ``fisher``).

        Parameters
        ----------
        path : str or os.PathLike
            The ``.npy`` file, shape (T, d).

        Returns
        -------
        UserStream
            The memory-mapped stream.

        Raises
        ------
        ValueError, TypeError
            As the constructor.
        """
        return cls(Path(path).stem, Path(path))

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        if path.suffix != ".npy":
            msg = f"stream file {str(path)!r} must be a .npy file"
            raise ValueError(msg)
        if not path.is_file():
            msg = f"stream file {str(path)!r} does not exist"
            raise ValueError(msg)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            msg = f"stream file {str(path)!r} cannot be read as a .npy array ({err})"
            raise ValueError(msg) from None
        if not np.issubdtype(array.dtype, np.floating):
            msg = f"stream file {str(path)!r} must hold real floats, got dtype {array.dtype}"
            raise TypeError(msg)
        return array

    @staticmethod
    def _check(array: np.ndarray, what: str) -> None:
        if array.ndim != 2:
            msg = f"{what} must be 2-D, shape (T, d), got shape {array.shape}"
            raise ValueError(msg)
        if array.shape[0] < 1 or array.shape[1] < 2:
            msg = f"{what} needs T >= 1 vectors of dimension d >= 2, got shape {array.shape}"
            raise ValueError(msg)
        rows = max(1, _FINITE_CHUNK // array.shape[1])
        for start in range(0, array.shape[0], rows):
            if not np.isfinite(array[start : start + rows]).all():
                msg = f"{what} has NaN or infinite entries (in rows {start} to {min(start + rows, array.shape[0]) - 1})"
                raise ValueError(msg)

    @property
    def array(self) -> np.ndarray:
        """The (T, d) data: the in-memory array, or the file memory-mapped read-only."""
        if self._array is not None:
            return self._array
        assert self._path is not None
        return np.load(self._path, mmap_mode="r", allow_pickle=False)

    def steps(self, steps: int) -> Iterator[StreamStep]:
        r"""Yield the first ``steps`` steps (t = 1, …, ``steps``), NumPy float64 copies of the rows.

        Parameters
        ----------
        steps : int
            Number of steps, at most ``length``.

        Yields
        ------
        StreamStep
            ``curvature`` :math:`x_t`, ``gradient`` :math:`x_{(t \bmod T) + 1}`, ``loss`` NaN.
        """
        data = self.array
        for t in range(1, steps + 1):
            yield StreamStep(
                t, np.array(data[t - 1], dtype=np.float64), np.array(data[t % self.length], dtype=np.float64), math.nan
            )

    def __repr__(self) -> str:
        source = f"path={str(self._path)!r}" if self._path is not None else "array"
        return f"UserStream({self.name!r}, {source}, shape=({self.length}, {self.dim}))"


def _user_streams(value: Any) -> tuple[UserStream, ...]:
    """Normalise ``StudyConfig.user_streams``: a mapping name → data, or an iterable of streams or pairs."""
    items = value.items() if isinstance(value, Mapping) else value
    out = []
    for item in items:
        if isinstance(item, UserStream):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2:
            out.append(UserStream(*item))
        else:
            msg = f"user_streams takes UserStream objects, (name, data) pairs or a mapping name → data, got {item!r}"
            raise TypeError(msg)
    return tuple(out)


def _builtin_dim(name: str) -> int:
    """D of a built-in stream (:data:`STREAMS` or :data:`LARGE_STREAMS`); ValueError naming both otherwise."""
    if name in LARGE_STREAMS:
        return LARGE_STREAMS[name].model.dim
    if name not in STREAMS:
        msg = f"stream must be one of {(*STREAMS, *LARGE_STREAMS)}, got {name!r}"
        raise ValueError(msg)
    return stream_dim(name)


@dataclass(frozen=True)
class StudyConfig:
    """What a study runs. The defaults are the ``lowrank-ggn study`` run.

    The grid: in the first dtype of ``dtypes`` (the *main* dtype), Ginger and
    QNG run for every rank × decay and are queried at every damping; in the
    other dtypes, for every rank at the default decay. The Sherman–Morrison
    path runs, in every dtype at the default decay, for every damping at the
    default rank and for every rank at the default damping. The diagonal EMA
    and the scaled identity run for every decay in the main dtype. The exact
    EMA (NumPy float64) runs for every decay.

    Metrics are recorded over training, at ``checkpoints`` evenly spaced
    steps, for the *default setting* (``rank``, ``decay``, ``damping``), and
    at the last step for every setting of the grid.
    The two spectral errors of ``ginger-diagonal`` (a diagonal plus a
    low-rank part: two d × d eigenvalue problems each) are computed for the
    default setting only (fixed γ and the equal-damping γ = α^τ), and are
    NaN in the rest of the grid; its other metrics cover the whole grid.

    **At scale.** A stream with more than :data:`~lowrank_ggn.studies.DENSE_LIMIT`
    parameters (every stream of :data:`~lowrank_ggn.studies.LARGE_STREAMS`,
    or a large user stream) never forms a d × d matrix: its exact EMA is a
    :class:`~lowrank_ggn.studies.WindowEMA` of all its ``large_steps``
    vectors (so it is exact), and every metric is computed matrix-free
    (:class:`~lowrank_ggn.studies.WindowReduction`). Such a stream runs
    ``large_steps`` steps, once (the first seed), at the default decay only
    (the other decays of the grid are left out), with the grid of ranks and
    dampings. A ``-blocks`` stream is split per parameter array: every method
    keeps one state per array (rank min(τ, d_j − 1) for an array of d_j
    parameters) and is compared with the block-diagonal exact EMA; its
    spectral errors are those of the whole block-diagonal matrices, its
    cosine and decrease fraction those of the whole step, and its subspace
    metrics (angles, λ_{τ+1}) are NaN. The two spectral errors of the
    diagonal EMA and of ``ginger-diagonal`` (not a scalar on a known
    complement) need Lanczos at that size: they are computed at the last
    step for the default rank and damping (fixed γ, and the equal-damping
    γ = α^τ) only, and are NaN elsewhere and where Lanczos does not converge.

    Parameters
    ----------
    streams : tuple of str, default STREAMS + ("digits-mlp-wide",)
        The curvature streams: :data:`STREAMS` (``digits-softmax``,
        ``digits-mlp``, ``power``, ``step``) and the keys of
        :data:`~lowrank_ggn.studies.LARGE_STREAMS`.
    steps : int, default 400
        Steps per stream (each step: one curvature vector, one Adam step of
        the model for the ``digits-*`` streams).
    large_steps : int, default 80
        Steps per stream with d > ``DENSE_LIMIT``.
    large_checkpoints : int, default 3
        Number of time-series points of a stream with d > ``DENSE_LIMIT``.
    large_ranks : tuple of int or None, default (2, 8, 16)
        The ranks τ of the grid for a stream with d > ``DENSE_LIMIT``; it must
        contain ``rank``. None: ``ranks``.
    ranks : tuple of int, default (1, 2, 4, 8, 16, 32)
        The ranks τ of the grid; each must be below the smallest stream
        dimension.
    decays : tuple of float, default (0.9, 0.99, 0.999)
        The EMA decays α of the grid.
    dampings : tuple of float, default (1e-4, 1e-3, 1e-2, 1e-1)
        The dampings γ of the fixed-damping comparison.
    seeds : tuple of int, default (0, 1, 2)
        One pass over every stream per seed (initial parameters, batches,
        sampled labels, synthetic draws).
    dtypes : tuple of str, default ("float64", "float32")
        Dtypes of the methods, the main one first; the exact EMA and the
        metrics are always NumPy float64.
    backend : str, default "numpy"
        Array backend of the methods: ``numpy``, ``jax``, ``torch``,
        ``cupy`` or ``array_api_strict``.
    rank : int, default 8
        τ of the default setting (the time series); one of ``ranks``.
    decay : float, default 0.99
        α of the default setting; one of ``decays``.
    damping : float, default 1e-2
        γ of the default setting; one of ``dampings``.
    checkpoints : int, default 12
        Number of time-series points (evenly spaced, the last at ``steps``).
    num_gradients : int, default 8
        Gradients per evaluation, for the cosine and the decrease metrics:
        the last ones of the trajectory.
    threads : int or None, default 1
        BLAS/OpenMP threads during the study (the matrices are small, and
        parallel passes each take a core); None leaves the libraries' default.
    user_streams : tuple of UserStream, default ()
        Streams supplied by the user, run after ``streams`` (which may then be
        empty), once each with the first seed. Also accepted: a mapping
        name → data or an iterable of ``(name, data)`` pairs, with ``data`` a
        ``.npy`` path (memory-mapped), a (T, d) array or an iterable of
        vectors; they are converted at construction. Step t of a user
        stream folds in its t-th vector and preconditions the next one (the
        first after the last); see ``lowrank_ggn.studies._runner.UserStream``.
    methods : tuple of str, default METHODS
        The methods whose rows are recorded (names of
        :data:`~lowrank_ggn.studies.METHODS`). The exact EMA and the diagonal
        EMA always run (the reference, and the unit of ``time_vs_diag``); a
        stateful method that is not chosen does not run (the eigen-path
        Ginger state runs when any of ``ginger``, ``ginger-tail``,
        ``ginger-fd`` or ``ginger-sm`` is chosen: the last is checked against
        it).
    approximations : tuple, default ()
        Further approximations of the library's protocol (objects such as
        ``lg.ginger_product(rank=8, decay=0.99)``, any rank and decay), each
        run over the grid under its ``name`` (:class:`~lowrank_ggn.studies.ProtocolRun`);
        their names are added to ``methods``.
    """

    streams: tuple[str, ...] = (*STREAMS, "digits-mlp-wide")
    steps: int = 400
    large_steps: int = 80
    large_checkpoints: int = 3
    large_ranks: tuple[int, ...] | None = (2, 8, 16)
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    dampings: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    seeds: tuple[int, ...] = (0, 1, 2)
    dtypes: tuple[str, ...] = ("float64", "float32")
    backend: str = "numpy"
    rank: int = 8
    decay: float = 0.99
    damping: float = 1e-2
    checkpoints: int = 12
    num_gradients: int = 8
    threads: int | None = 1
    user_streams: tuple[UserStream, ...] = ()
    methods: tuple[str, ...] = METHODS
    approximations: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_streams", _user_streams(self.user_streams))
        object.__setattr__(self, "approximations", tuple(self.approximations))
        names = (getattr(a, "name", None) for a in self.approximations)
        extra = tuple(n for n in names if isinstance(n, str) and n not in self.methods)
        object.__setattr__(self, "methods", (*self.methods, *extra))

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """Return a small study that runs in well under a minute (``lowrank-ggn study --quick``).

        Streams ``digits-softmax`` and ``power``, 150 steps, τ ∈ {2, 8},
        α ∈ {0.9, 0.99}, γ ∈ {1e-3, 1e-2, 1e-1}, one seed, 5 checkpoints; the
        other fields keep their defaults.

        Parameters
        ----------
        **overrides
            Fields to set instead (any field of :class:`StudyConfig`).

        Returns
        -------
        StudyConfig
            The quick configuration, with the overrides.
        """
        base = cls(
            streams=("digits-softmax", "power"),
            steps=150,
            ranks=(2, 8),
            decays=(0.9, 0.99),
            dampings=(1e-3, 1e-2, 1e-1),
            seeds=(0,),
            checkpoints=5,
        )
        return replace(base, **overrides)

    @property
    def main_dtype(self) -> str:
        """The dtype of the full grid."""
        return self.dtypes[0]

    @property
    def stream_names(self) -> tuple[str, ...]:
        """Every stream of the study, in the order of the passes: ``streams``, then the user streams' names."""
        return (*self.streams, *(u.name for u in self.user_streams))

    def stream_dim(self, name: str) -> int:
        """Return the dimension d of a stream of the study (built-in or user).

        Parameters
        ----------
        name : str
            One of ``stream_names``.

        Returns
        -------
        int
            d.

        Raises
        ------
        ValueError
            If ``name`` is neither a built-in stream nor a user stream.
        """
        for user in self.user_streams:
            if user.name == name:
                return user.dim
        return _builtin_dim(name)

    def is_large(self, name: str) -> bool:
        """Whether a stream of the study has more than ``DENSE_LIMIT`` parameters (the matrix-free path).

        Parameters
        ----------
        name : str
            One of ``stream_names``.

        Returns
        -------
        bool
            d > :data:`~lowrank_ggn.studies.DENSE_LIMIT`.
        """
        return self.stream_dim(name) > DENSE_LIMIT

    def ranks_of(self, name: str) -> tuple[int, ...]:
        """Return the ranks of the grid of a stream: ``large_ranks`` (unless None) for a large one, else ``ranks``.

        Parameters
        ----------
        name : str
            One of ``stream_names``.

        Returns
        -------
        tuple of int
            The ranks τ.
        """
        return self.large_ranks if self.is_large(name) and self.large_ranks is not None else self.ranks

    def steps_of(self, name: str) -> int:
        """Return the number of steps of a stream: ``large_steps`` for a large one, else ``steps``.

        Parameters
        ----------
        name : str
            One of ``stream_names``.

        Returns
        -------
        int
            The steps of its pass (its last step is the final evaluation).
        """
        return self.large_steps if self.is_large(name) else self.steps

    def passes(self) -> list[tuple[str, int]]:
        """Return the passes of the study, in order: every built-in stream × seed, then every user stream.

        Returns
        -------
        list of (str, int)
            (stream name, seed) pairs; a user stream and a large stream
            (:meth:`is_large`) run once, with the first seed.
        """
        return [(s, seed) for s in self.streams for seed in (self.seeds[:1] if self.is_large(s) else self.seeds)] + [
            (u.name, self.seeds[0]) for u in self.user_streams
        ]

    def validate(self) -> None:  # noqa: C901 - a flat list of checks
        """Check the configuration; :func:`run_study` calls it first.

        Raises
        ------
        ValueError
            For an unknown stream, dtype or method, no stream at all, an empty
            ``seeds``, ``dtypes`` or ``methods``, two streams of one name,
            non-positive ``steps``, ``checkpoints`` or ``num_gradients``, a
            user stream with fewer than ``steps`` vectors, a decay outside
            (0, 1) or a damping that is not positive and finite, a default
            setting outside the grid, or a rank outside [1, d) for the
            smallest stream dimension d.
        """
        self._validate_streams()
        for a in self.approximations:
            if not all(hasattr(a, x) for x in ("name", "with_rank", "init", "update", "precondition", "operator")):
                msg = f"approximations must follow the approximation protocol, got {a!r}"
                raise ValueError(msg)
            if a.name in METHODS:
                msg = f"approximation name {a.name!r} is already a method of the study"
                raise ValueError(msg)
        known = (*METHODS, *(a.name for a in self.approximations))
        unknown = [m for m in self.methods if m not in known]
        if not self.methods or unknown:
            msg = f"methods must be a non-empty selection of {known}, got {list(self.methods)}"
            raise ValueError(msg)
        if not (self.seeds and self.dtypes):
            msg = "seeds and dtypes must not be empty"
            raise ValueError(msg)
        for dtype in self.dtypes:
            if dtype not in {"float32", "float64"}:
                msg = f"dtypes must be float32 or float64, got {dtype!r}"
                raise ValueError(msg)
        if min(self.steps, self.large_steps, self.checkpoints, self.large_checkpoints, self.num_gradients) < 1:
            msg = "steps, large_steps, checkpoints, large_checkpoints and num_gradients must be positive"
            raise ValueError(msg)
        for user in self.user_streams:
            if user.length < self.steps_of(user.name):
                what = "large_steps" if self.is_large(user.name) else "steps"
                n = self.steps_of(user.name)
                msg = f"user stream {user.name!r} has {user.length} vectors, fewer than {what} = {n}"
                raise ValueError(msg)
        self._validate_grid()

    def _validate_streams(self) -> None:
        for name in self.streams:
            _builtin_dim(name)
        names = self.stream_names
        if not names:
            msg = "streams (or user_streams) must not be empty"
            raise ValueError(msg)
        if len(set(names)) != len(names):
            msg = f"every stream needs its own name, got {list(names)}"
            raise ValueError(msg)

    def _validate_grid(self) -> None:
        if not all(0 < a < 1 for a in self.decays):
            msg = f"every decay must lie in (0, 1), got {list(self.decays)}"
            raise ValueError(msg)
        if not all(math.isfinite(g) and g > 0 for g in self.dampings):
            msg = f"every damping must be positive and finite, got {list(self.dampings)}"
            raise ValueError(msg)
        if self.rank not in self.ranks or self.decay not in self.decays or self.damping not in self.dampings:
            msg = "the default rank, decay and damping must belong to ranks, decays and dampings"
            raise ValueError(msg)
        large = any(self.is_large(s) for s in self.stream_names)
        if (
            large
            and self.large_ranks is not None
            and (not self.large_ranks or self.rank not in self.large_ranks or min(self.large_ranks) < 1)
        ):
            msg = f"large_ranks must be positive and contain the default rank {self.rank}, got {self.large_ranks}"
            raise ValueError(msg)
        small = min(self.stream_dim(s) for s in self.stream_names)
        ranks = {r for s in self.stream_names for r in self.ranks_of(s)}
        if min(ranks) < 1 or max(ranks) >= small:
            msg = f"every rank must lie in [1, {small}) (the smallest dimension)"
            raise ValueError(msg)


@dataclass
class StudyResult:
    """Rows of the study (one dict per method × setting × step) and the final spectra.

    Parameters
    ----------
    config : StudyConfig
        The configuration that produced the result.
    rows : list of dict
        One dict per method × setting × step, with the keys :data:`COLUMNS`
        (in the order of the passes: stream, then seed).
    spectra : list of dict
        The eigenvalues of every exact EMA at the last step, one dict per
        eigenvalue, with the keys ``stream``, ``seed``, ``decay``, ``step``,
        ``index`` (from 1, descending order) and ``eigval``.
    seconds : float, default 0.0
        Wall time of the study.
    """

    config: StudyConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    spectra: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Pass:
    """The state of one pass over one stream with one seed."""

    config: StudyConfig
    stream: str
    seed: int
    dim: int
    xp: Any
    exact: dict[float, ExactEMA]
    ginger: dict[tuple[str, int, float], GingerRun]
    sm: dict[tuple[str, int, float, float], GingerRun]
    qng: dict[tuple[str, int, float], QNGRun]
    diag: dict[tuple[str, float], DiagonalRun]
    iso: dict[tuple[str, float], IsotropicRun]
    proto: dict[tuple[str, int, float, str], ProtocolRun] = field(default_factory=dict)
    gradients: list[np.ndarray] = field(default_factory=list)
    loss: float = math.nan

    def decays_of(self, dtype: str) -> tuple[float, ...]:
        return self.config.decays if dtype == self.config.main_dtype else (self.config.decay,)


_GINGER_FAMILY = frozenset({"ginger", "ginger-tail", "ginger-fd", "ginger-sm"})


def _templates(config: StudyConfig) -> dict[str, Any]:
    """Return the chosen methods of the approximation protocol: name → template (built-ins, then the config's)."""
    out = {k: v for k, v in protocol_templates().items() if k in config.methods}
    out.update((a.name, a) for a in config.approximations)
    return out


def _build_pass(  # noqa: C901 - a flat list of method groups
    config: StudyConfig,
    stream: str,
    seed: int,
    xp: Any,
    *,
    dim: int | None = None,
    decays: tuple[float, ...] | None = None,
) -> _Pass:
    """Return the runs of one pass (or of one block of a large pass: ``dim`` its size, ranks clipped to dim − 1)."""
    c = config
    dim = config.stream_dim(stream) if dim is None else dim
    decays = c.decays if decays is None else decays
    ranks = c.ranks_of(stream)
    chosen = set(c.methods)
    templates = _templates(c)
    exact = {a: ExactEMA(dim, a) for a in decays} if dim <= DENSE_LIMIT and not c.is_large(stream) else {}
    p = _Pass(c, stream, seed, dim, xp, exact, {}, {}, {}, {}, {})

    def clip(rank: int) -> int:
        return max(1, min(rank, dim - 1))

    for dtype in c.dtypes:
        common = {"dim": dim, "xp": xp, "dtype": getattr(xp, dtype)}
        for decay in p.decays_of(dtype):
            if decay not in decays:
                continue
            p.diag[dtype, decay] = DiagonalRun(decay=decay, **common)  # always: the unit of time_vs_diag
            if "identity" in chosen:
                p.iso[dtype, decay] = IsotropicRun(decay=decay, **common)
            for rank in ranks:
                if chosen & _GINGER_FAMILY:
                    p.ginger[dtype, rank, decay] = GingerRun(decay=decay, rank=clip(rank), **common)
                if "qng" in chosen:
                    p.qng[dtype, rank, decay] = QNGRun(decay=decay, rank=clip(rank), **common)
                for name, template in templates.items():
                    p.proto[dtype, rank, decay, name] = ProtocolRun(
                        decay=decay, rank=clip(rank), approximation=template, **common
                    )
        if "ginger-sm" in chosen and c.decay in decays:
            sm_settings = {(c.rank, g) for g in c.dampings} | {(r, c.damping) for r in ranks}
            for rank, gamma in sorted(sm_settings):
                p.sm[dtype, rank, c.decay, gamma] = GingerRun(
                    decay=c.decay, rank=clip(rank), path_damping=gamma, **common
                )
    return p


def _advance(p: _Pass, d: np.ndarray, g: np.ndarray) -> None:
    for ema in p.exact.values():
        ema.update(d)
    vectors = {}
    for name in p.config.dtypes:
        dt = getattr(p.xp, name)
        vectors[name] = (p.xp.asarray(d, dtype=dt), p.xp.asarray(g, dtype=dt))
    gamma = p.config.damping
    for group in (p.ginger, p.sm, p.qng, p.diag, p.iso, p.proto):
        for key, run in group.items():
            db, gb = vectors[key[0]]
            run.step(db, gb, gamma)
    p.gradients.append(g)
    del p.gradients[: -p.config.num_gradients]


class _Evaluator:
    """Metrics at one checkpoint for one decay: the exact spectrum, the gradients and projections are shared."""

    def __init__(self, p: _Pass, decay: float, step: int) -> None:
        self.p, self.decay, self.step = p, decay, step
        lam, vec = p.exact[decay].eig()
        self.exact = ExactSpectrum(lam, vec, p.exact[decay].matrix)
        self.grads = np.stack(p.gradients, axis=1)
        self._solves: dict[float, np.ndarray] = {}
        self._projections: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._curvature: dict[Any, float] = {}

    def solve(self, damping: float) -> np.ndarray:
        if damping not in self._solves:
            self._solves[damping] = self.exact.solve(self.grads, damping)
        return self._solves[damping]

    def projection(self, basis: np.ndarray) -> np.ndarray:
        """``Vᵀ W``, cached per basis; exactly ``[I; 0]`` when W is a leading block of V (the oracles)."""
        key = id(basis)
        if key not in self._projections:
            v = self.exact.eigvecs
            k = basis.shape[1]
            leading = np.shares_memory(basis, v) and np.array_equal(basis, v[:, :k])
            proj = np.eye(v.shape[1], k) if leading else v.T @ basis
            self._projections[key] = (basis, proj)
        return self._projections[key][1]

    def row(self, **fields: Any) -> dict[str, Any]:
        row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
        row.update(
            stream=self.p.stream,
            dim=self.p.dim,
            seed=self.p.seed,
            backend=self.p.config.backend,
            decay=self.decay,
            step=self.step,
            loss=self.p.loss,
            rank="",
        )
        row.update(fields)
        # Plain Python numbers only (NumPy scalars print as ``np.float64(…)``).
        return {
            k: float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v
            for k, v in row.items()
        }

    def timing(self, run: Any, dtype: str) -> dict[str, float]:
        """``time_per_step_s`` and ``time_vs_diag``; NaN before any step was timed (the first one is not)."""
        seconds = run.time_per_step if run.steps > 1 else math.nan
        diag = self.p.diag.get((dtype, self.decay))
        unit = diag.time_per_step if diag is not None and diag.steps > 1 else math.nan
        return {"time_per_step_s": seconds, "time_vs_diag": seconds / unit if unit > 0 else math.nan}

    def curvature_error(self, approx: Structured, damping: float, proj: np.ndarray | None, key: Any) -> float:
        """``‖G̃ − G‖₂ / ‖G‖₂``; ``G̃ − G`` does not depend on γ when ``G̃``'s damping moves with it (``key``).

        The cache holds the absolute norm ``‖G̃ − G‖₂`` (the relative error times ‖G‖₂ = γ + λ₁).
        """
        norm = damping + float(self.exact.eigvals[0])
        if key is None:
            return spectral_error(approx, self.exact, damping, inverse=False, projection=proj)
        key = (*key, float(approx.diagonal[0] - damping) if approx.isotropic else 0.0)
        if key not in self._curvature:
            self._curvature[key] = norm * spectral_error(approx, self.exact, damping, inverse=False, projection=proj)
        return self._curvature[key] / norm

    def metrics(
        self,
        approx: Structured,
        damping: float,
        step: np.ndarray,
        rank: int | None,
        subspace: np.ndarray | None,
        *,
        key: Any = None,
    ) -> dict[str, float]:
        """Every metric of a damped approximation at reference damping γ (``step`` = G̃⁻¹ g, columns).

        ``key`` identifies the undamped part of ``approx`` (its state and
        the offset of its damping from γ) for the curvature-error cache.
        """
        exact = self.exact
        proj = self.projection(approx.basis) if approx.isotropic and approx.basis.shape[1] else None
        if approx.isotropic or not approx.basis.shape[1]:
            errors = (
                spectral_error(approx, exact, damping, inverse=True, projection=proj),
                self.curvature_error(approx, damping, proj, key),
            )
        elif self._default_setting(damping, rank):
            errors = self._diag_lowrank_errors(approx, damping)
        else:  # a diagonal + low-rank matrix (ginger-diagonal): two d × d eigenvalue problems per setting
            errors = (math.nan, math.nan)
        out = {
            "inv_spectral_error": errors[0],
            "curv_spectral_error": errors[1],
            "cosine": float(np.mean(cosine(step, self.solve(damping)))),
            "decrease_fraction": float(
                np.mean(decrease_fraction(self.grads, step, exact, damping, optimal_step=self.solve(damping)))
            ),
        }
        if rank is not None:
            lam_next = float(exact.eigvals[rank])
            out["lambda_next"] = lam_next
            # The oracle's relative inverse error: (1/γ − 1/(γ + λ_{τ+1})) / ‖G⁻¹‖, ‖G⁻¹‖ = 1/(γ + λ_min).
            out["eckart_young_bound"] = lam_next / (damping + lam_next) * (damping + float(exact.eigvals[-1])) / damping
            if subspace is not None:
                proj = self.projection(subspace)
                angles = principal_angles(np.eye(exact.dim, rank), proj)
                cosines = np.cos(angles)
                out["angle_max_deg"] = float(np.degrees(angles.max()))
                out["subspace_overlap"] = float(np.mean(cosines * cosines))
                out["captured_share"] = captured_share(exact, subspace, proj)
        return out


    def _default_setting(self, damping: float, rank: int | None) -> bool:
        """Whether (α, τ, γ) is the default setting (fixed γ, or the equal-damping γ = α^τ)."""
        c = self.p.config
        equal = float(self.decay ** min(c.rank, self.step))
        return self.decay == c.decay and rank in (None, c.rank) and damping in (c.damping, equal)

    def _diag_lowrank_errors(self, approx: Structured, damping: float) -> tuple[float, float]:
        """Relative spectral errors (inverse, curvature) of ``diag(a) + V diag(c) Vᵀ``, densely (eigvalsh)."""
        lam, vec = self.exact.eigvals, self.exact.eigvecs
        keep = approx.coef > 0
        v, c, a = approx.basis[:, keep], approx.coef[keep], approx.diagonal
        dense = np.diag(a) + (v * c) @ v.T
        ref = (vec * (lam + damping)) @ vec.T
        curv = float(np.abs(np.linalg.eigvalsh(dense - ref)).max()) / (damping + float(lam[0]))
        v_a = v / a[:, None]  # Woodbury: (A + VCVᵀ)⁻¹ = A⁻¹ − A⁻¹V (C⁻¹ + VᵀA⁻¹V)⁻¹ VᵀA⁻¹
        inv = np.diag(1 / a) - v_a @ np.linalg.solve(np.diag(1 / c) + v.T @ v_a, v_a.T) if c.size else np.diag(1 / a)
        ref_inv = (vec / (lam + damping)) @ vec.T
        inv_err = float(np.abs(np.linalg.eigvalsh(inv - ref_inv)).max()) * (damping + float(lam[-1]))
        return inv_err, curv


def _top(structure: Structured, rank: int) -> np.ndarray:
    """Return the eigenvectors of the ``rank`` largest coefficients (the basis itself if it has ≤ rank columns)."""
    if structure.basis.shape[1] <= rank:
        return structure.basis
    order = np.argsort(structure.coef)[::-1][:rank]
    return structure.basis[:, order]


def _rows_exact(ev: _Evaluator, mode: str, damping: float, ranks: tuple[int, ...]) -> list[dict[str, Any]]:
    """Rows of the exact EMA and of the oracles (NumPy float64)."""
    ema = ev.p.exact[ev.decay]
    trace = ev.exact.trace
    common = {"dtype": "float64", "damping_mode": mode, "damping": damping}
    chosen = ev.p.config.methods
    rows = []
    if "exact" in chosen:
        rows.append(
            ev.row(
                method="exact",
                rank=ranks[0] if mode == "equal" else "",
                effective_damping=damping,
                represented_share=1.0,
                memory_floats=ev.p.dim * ev.p.dim,
                **common,
                **ev.metrics(ema.structure(damping), damping, ev.solve(damping), None, None, key=("exact",)),
            )
        )
    for rank in ranks:
        for name, tail in (("oracle", False), ("oracle-tail", True)):
            if name not in chosen:
                continue
            s = ema.structure(damping, rank, tail=tail)
            rows.append(
                ev.row(
                    method=name,
                    rank=rank,
                    effective_damping=float(s.diagonal[0]),
                    represented_share=float(s.coef.sum() / trace),
                    memory_floats=ev.p.dim * rank + rank + int(tail),
                    **common,
                    **ev.metrics(s, damping, s.inverse().matvec(ev.grads), rank, s.basis, key=(name, rank)),
                )
            )
    return rows


def _ginger_checks(ev: _Evaluator, run: GingerRun, damping: float, rank: int) -> dict[str, float]:
    """Trace identity and the distance to the float64 eigen-path state of the same setting."""
    sigma = run.lowrank()[1]
    trace = ev.exact.trace
    out = {"trace_gap": float(abs(sigma.sum() + run.discarded - trace) / trace)}
    ref = ev.p.ginger.get(("float64", rank, ev.decay))
    if ref is not None:
        out["dev_from_ginger64"] = relative_spectral_distance(
            run.structure(damping).inverse(), ref.structure(damping).inverse()
        )
        sigma64 = ref.lowrank()[1]
        out["sigma_relerr"] = float(np.abs(sigma - sigma64).max() / sigma64[0])
    return out


def _rows_ginger(ev: _Evaluator, mode: str, damping: float, dtype: str, rank: int) -> list[dict[str, Any]]:
    run = ev.p.ginger.get((dtype, rank, ev.decay))
    if run is None:  # not chosen
        return []
    variants: tuple[tuple[str, str], ...] = (("ginger", "plain"), ("ginger-tail", "tail"), ("ginger-fd", "fd"))
    if dtype != ev.p.config.main_dtype:
        variants = variants[:1]
    variants = tuple(v for v in variants if v[0] in ev.p.config.methods)
    if not variants:
        return []
    represented = run.lowrank_trace() / ev.exact.trace
    nonfinite = int(to_numpy(run.state.num_nonfinite))
    rows = []
    for name, variant in variants:
        gamma_eff = run.tail_damping(damping, variant)
        s = run.structure(gamma_eff)
        extra = _ginger_checks(ev, run, damping, rank) if variant == "plain" else {}
        m = ev.metrics(s, damping, run.precondition(ev.grads, gamma_eff), rank, _top(s, rank), key=(id(run), variant))
        rows.append(
            ev.row(
                dtype=dtype,
                method=name,
                rank=rank,
                damping_mode=mode,
                damping=damping,
                effective_damping=gamma_eff,
                represented_share=represented,
                nonfinite=nonfinite,
                memory_floats=run.memory_floats,
                **ev.timing(run, dtype),
                **extra,
                **m,
                **_certificate(run.discarded, m["curv_spectral_error"] * (damping + float(ev.exact.eigvals[0]))),
            )
        )
    return rows


def _certificate(rho: float, error: float) -> dict[str, float]:
    """``rho_certificate`` ρ and ``certificate_tightness`` = the absolute ‖G̃ − G‖₂ over ρ (NaN when ρ = 0)."""
    return {"rho_certificate": rho, "certificate_tightness": error / rho if rho > 0 else math.nan}


def _rows_sm(ev: _Evaluator, damping: float, dtype: str, rank: int) -> list[dict[str, Any]]:
    run = ev.p.sm.get((dtype, rank, ev.decay, damping))
    if run is None:  # not chosen, or not a setting of the Sherman–Morrison grid
        return []
    s = run.structure(damping)
    m = ev.metrics(s, damping, run.precondition(ev.grads, damping), rank, _top(s, rank), key=(id(run),))
    return [
        ev.row(
            dtype=dtype,
            method="ginger-sm",
            rank=rank,
            damping_mode="fixed",
            damping=damping,
            effective_damping=damping,
            represented_share=run.lowrank_trace() / ev.exact.trace,
            nonfinite=int(to_numpy(run.state.num_nonfinite)),
            memory_floats=run.memory_floats,
            **ev.timing(run, dtype),
            **_ginger_checks(ev, run, damping, rank),
            **m,
            **_certificate(run.discarded, m["curv_spectral_error"] * (damping + float(ev.exact.eigvals[0]))),
        )
    ]


def _rows_qng(ev: _Evaluator, mode: str, damping: float, dtype: str, rank: int) -> list[dict[str, Any]]:
    run = ev.p.qng.get((dtype, rank, ev.decay))
    if run is None:  # not chosen
        return []
    s = run.structure()
    return [
        ev.row(
            dtype=dtype,
            method="qng",
            rank=rank,
            damping_mode=mode,
            damping=damping,
            effective_damping=run.implicit_damping,
            represented_share=float(s.coef.sum() / ev.exact.trace),
            nonfinite=int(to_numpy(run.state.num_nonfinite)),
            memory_floats=run.memory_floats,
            **ev.timing(run, dtype),
            **ev.metrics(s, damping, run.precondition(ev.grads, damping), rank, _top(s, rank)),
        )
    ]


def _rows_simple(ev: _Evaluator, mode: str, damping: float, rank: int | None) -> list[dict[str, Any]]:
    dtype = ev.p.config.main_dtype
    rows = []
    for name, group in (("diag", ev.p.diag), ("identity", ev.p.iso)):
        if name not in ev.p.config.methods:
            continue
        run = group[dtype, ev.decay]
        s = run.structure(damping)
        rows.append(
            ev.row(
                dtype=dtype,
                method=name,
                rank=rank if mode == "equal" else "",
                damping_mode=mode,
                damping=damping,
                effective_damping=float(s.diagonal.mean()) if name == "identity" else damping,
                represented_share=run.lowrank_trace() / ev.exact.trace,
                memory_floats=run.memory_floats,
                **ev.timing(run, dtype),
                **ev.metrics(s, damping, run.precondition(ev.grads, damping), None, None, key=(id(run),)),
            )
        )
    return rows


def _rows_proto(ev: _Evaluator, mode: str, damping: float, dtype: str, rank: int) -> list[dict[str, Any]]:
    """Rows of the methods run through the approximation protocol (:class:`ProtocolRun`)."""
    rows = []
    for (dt, r, decay, name), run in ev.p.proto.items():
        if dt != dtype or r != rank or decay != ev.decay:
            continue
        s = run.structure(damping)
        lowrank = s.isotropic and 0 < s.basis.shape[1] < ev.p.dim
        m = ev.metrics(s, damping, run.precondition(ev.grads, damping), rank, _top(s, rank) if lowrank else None)
        rho = getattr(run.state, "discarded", None)
        cert = (
            {}
            if rho is None
            else _certificate(float(to_numpy(rho)), m["curv_spectral_error"] * (damping + float(ev.exact.eigvals[0])))
        )
        rows.append(
            ev.row(
                dtype=dtype,
                method=name,
                rank=rank,
                damping_mode=mode,
                damping=damping,
                effective_damping=damping if run.needs_damping else float(s.diagonal.mean()),
                represented_share=run.lowrank_trace(damping) / ev.exact.trace,
                nonfinite=_nonfinite(run.state),
                memory_floats=run.memory_floats,
                **ev.timing(run, dtype),
                **m,
                **cert,
            )
        )
    return rows


def _nonfinite(state: Any) -> float:
    """``state.num_nonfinite`` as an int when the state has it, else NaN."""
    count = getattr(state, "num_nonfinite", None)
    return math.nan if count is None else int(to_numpy(count))


def _evaluate(p: _Pass, step: int, *, final: bool) -> list[dict[str, Any]]:
    """Rows at one checkpoint: the default setting only, or (``final``) the whole grid."""
    c = p.config
    rows: list[dict[str, Any]] = []
    for decay in c.decays if final else (c.decay,):
        ev = _Evaluator(p, decay, step)
        ranks = c.ranks_of(p.stream) if final else (c.rank,)
        dtypes = [dt for dt in c.dtypes if decay in p.decays_of(dt)]
        for gamma in c.dampings if final else (c.damping,):
            rows.extend(_rows_exact(ev, "fixed", gamma, ranks))
            rows.extend(_rows_simple(ev, "fixed", gamma, None))
            for dtype in dtypes:
                for rank in ranks:
                    rows.extend(_rows_ginger(ev, "fixed", gamma, dtype, rank))
                    rows.extend(_rows_qng(ev, "fixed", gamma, dtype, rank))
                    rows.extend(_rows_proto(ev, "fixed", gamma, dtype, rank))
                    rows.extend(_rows_sm(ev, gamma, dtype, rank))
        for rank in ranks:
            gamma = float(decay ** min(rank, step))
            rows.extend(_rows_exact(ev, "equal", gamma, (rank,)))
            rows.extend(_rows_simple(ev, "equal", gamma, rank))
            for dtype in dtypes:
                rows.extend(_rows_ginger(ev, "equal", gamma, dtype, rank))
                rows.extend(_rows_qng(ev, "equal", gamma, dtype, rank))
                rows.extend(_rows_proto(ev, "equal", gamma, dtype, rank))
    return rows


def _checkpoints(steps: int, count: int) -> list[int]:
    return sorted({max(1, round(steps * (i + 1) / count)) for i in range(count)})


def _spectra(p: _Pass, step: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for decay, ema in p.exact.items():
        lam, _ = ema.eig()
        out.extend(
            {"stream": p.stream, "seed": p.seed, "decay": decay, "step": step, "index": i + 1, "eigval": float(v)}
            for i, v in enumerate(lam)
        )
    return out


def _stream_steps(config: StudyConfig, stream: str, seed: int) -> Iterator[StreamStep]:
    steps = config.steps_of(stream)
    for user in config.user_streams:
        if user.name == stream:
            return user.steps(steps)
    if stream in LARGE_STREAMS:
        return make_large_stream(stream, steps=steps, seed=seed)
    return make_stream(stream, steps=steps, seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# Streams at scale: the exact EMA is a window of the curvature vectors, one per block; every metric matrix-free.


class _WindowEvaluator:
    """Metrics at one checkpoint of a large pass: one :class:`WindowReduction` per block, combined.

    For a block-diagonal G = ⊕ G_j and G̃ = ⊕ G̃_j, ‖G̃⁻¹ − G⁻¹‖₂ = max_j ‖G̃_j⁻¹ − G_j⁻¹‖₂,
    ‖G⁻¹‖₂ = 1/(γ + min_j λ_min,j), ‖G‖₂ = γ + max_j λ_max,j; the cosine and the decrease fraction
    come from the blocks' inner products (:meth:`WindowReduction.step_terms`).
    """

    def __init__(self, lp: _LargePass, step: int, *, final: bool) -> None:
        self.lp, self.step, self.final = lp, step, final
        self.reds = [
            WindowReduction(w, np.stack(p.gradients, axis=1)) for w, p in zip(lp.windows, lp.blocks, strict=True)
        ]
        self.single = len(self.reds) == 1
        self.trace = float(sum(r.trace for r in self.reds))

    def row(self, **fields: Any) -> dict[str, Any]:
        p = self.lp.blocks[0]
        row: dict[str, Any] = dict.fromkeys(COLUMNS, math.nan)
        row.update(
            stream=self.lp.stream,
            dim=self.lp.dim,
            seed=self.lp.seed,
            backend=p.config.backend,
            decay=self.lp.decay,
            step=self.step,
            loss=self.lp.loss,
            rank="",
        )
        row.update(fields)
        return {
            k: float(v) if isinstance(v, np.floating) else int(v) if isinstance(v, np.integer) else v
            for k, v in row.items()
        }

    def timing(self, runs: list[Any], dtype: str) -> dict[str, float]:
        if runs[0].steps <= 1:
            return {"time_per_step_s": math.nan, "time_vs_diag": math.nan}
        seconds = sum(r.time_per_step for r in runs)
        diag = [p.diag.get((dtype, self.lp.decay)) for p in self.lp.blocks]
        unit = sum(d.time_per_step for d in diag) if all(d is not None and d.steps > 1 for d in diag) else math.nan
        return {"time_per_step_s": seconds, "time_vs_diag": seconds / unit if unit > 0 else math.nan}

    def metrics(
        self,
        structures: list[Structured],
        steps: list[np.ndarray],
        damping: float,
        rank: int | None,
    ) -> dict[str, float]:
        """Every metric of the block-diagonal approximation ⊕ structures[j] with the method's own steps."""
        inv_gap = curv_gap = 0.0
        lam_min, lam_max = math.inf, 0.0
        terms: dict[str, np.ndarray] = {}
        extra: dict[str, float] = {}
        for red, s, st in zip(self.reds, structures, steps, strict=True):
            if s.isotropic:
                # Subspace metrics (angles, λ_{τ+1}) only for a whole-model stream.
                block_rank = rank if self.single else None
                m = red.metrics(s.basis, s.coef, float(s.diagonal[0]), damping, rank=block_rank)
                extra = {k: m[k] for k in _SUBSPACE if k in m}
            elif self.final and self._lanczos_setting(damping, rank):
                low = (s.basis, s.coef) if s.basis.shape[1] else None
                m = red.diagonal_metrics(s.diagonal, damping, step=st, max_restarts=_LANCZOS_RESTARTS, lowrank=low)
            else:  # Lanczos (seconds at d ~ 10⁵): the last step's default setting only; the step metrics are exact
                m = {"inv_spectral_error": math.nan, "curv_spectral_error": math.nan}
            # NaN (Lanczos not converged) propagates: np.fmax would hide it, max() too.
            inv_gap = float(np.maximum(inv_gap, m["inv_spectral_error"] / (damping + red.lambda_min)))
            curv_gap = float(np.maximum(curv_gap, m["curv_spectral_error"] * (damping + red.lambda_max)))
            lam_min, lam_max = min(lam_min, red.lambda_min), max(lam_max, red.lambda_max)
            for k, v in red.step_terms(st, damping).items():
                terms[k] = terms.get(k, 0.0) + v
        self.curv_norm = damping + lam_max  # ‖G‖₂ of the last call: the scale of curv_spectral_error
        return {
            "inv_spectral_error": inv_gap * (damping + lam_min),
            "curv_spectral_error": curv_gap / (damping + lam_max),
            "cosine": float(np.mean(terms["dot"] / np.sqrt(terms["ss"] * terms["bb"]))),
            "decrease_fraction": float(np.mean(terms["achieved"] / terms["optimal"])),
            **extra,
        }

    def _lanczos_setting(self, damping: float, rank: int | None) -> bool:
        """Whether a non-isotropic approximation's spectral errors are computed (Lanczos): the default setting."""
        c = self.lp.config
        return rank in (None, c.rank) and (damping == c.damping or damping == float(self.lp.decay ** min(c.rank, self.step)))

    def certified(
        self, structures: list[Structured], steps: list[np.ndarray], damping: float, rank: int | None, runs: list[Any]
    ) -> dict[str, float]:
        """:meth:`metrics`, with the ρ certificate when the states carry ``discarded`` (max over the blocks)."""
        out = self.metrics(structures, steps, damping, rank)
        rho = [getattr(run.state, "discarded", None) for run in runs]
        if all(r is not None for r in rho):
            out.update(_certificate(max(float(to_numpy(r)) for r in rho), out["curv_spectral_error"] * self.curv_norm))
        return out


_SUBSPACE = ("lambda_next", "eckart_young_bound", "angle_max_deg", "subspace_overlap", "captured_share")
_LANCZOS_RESTARTS = 20


@dataclass
class _LargePass:
    """A pass over a large stream: one :class:`_Pass` of runs and one :class:`WindowEMA` per block."""

    config: StudyConfig
    stream: str
    seed: int
    dim: int
    decay: float
    slices: tuple[slice, ...]
    blocks: list[_Pass]
    windows: list[WindowEMA]
    loss: float = math.nan

    def runs(self, group: str, key: tuple[Any, ...]) -> list[Any] | None:
        """Return the run of ``key`` in every block (None when it does not exist)."""
        out = [getattr(p, group).get(key) for p in self.blocks]
        return None if any(r is None for r in out) else out


def _blocks_of(stream: str, dim: int) -> tuple[slice, ...]:
    """Return the blocks of a large stream: per parameter array for a ``-blocks`` stream, else the whole vector."""
    return large_stream_blocks(stream) if stream in LARGE_STREAMS else (slice(0, dim),)


def _build_large_pass(config: StudyConfig, stream: str, seed: int, xp: Any) -> _LargePass:
    dim = config.stream_dim(stream)
    slices = _blocks_of(stream, dim)
    decay, steps = config.decay, config.steps_of(stream)
    blocks = [_build_pass(config, stream, seed, xp, dim=b.stop - b.start, decays=(decay,)) for b in slices]
    windows = [WindowEMA(b.stop - b.start, decay, threshold=0.0, max_size=steps) for b in slices]
    return _LargePass(config, stream, seed, dim, decay, slices, blocks, windows)


def _large_rows(ev: _WindowEvaluator, *, final: bool) -> list[dict[str, Any]]:
    """Rows at one checkpoint of a large pass: the default setting, or (``final``) ranks × dampings."""
    lp, c = ev.lp, ev.lp.config
    chosen = set(c.methods)
    ranks = c.ranks_of(lp.stream) if final else (c.rank,)
    dampings = c.dampings if final else (c.damping,)
    settings = [("fixed", g, r) for g in dampings for r in ranks] + [
        ("equal", float(lp.decay ** min(r, ev.step)), r) for r in ranks
    ]
    rows: list[dict[str, Any]] = []
    main = c.main_dtype
    # The oracles (float64, from the window's eigendecomposition).
    for name, tail in (("oracle", False), ("oracle-tail", True)):
        if name not in chosen:
            continue
        for mode, gamma, rank in settings:
            structures, steps, effective = [], [], []
            for red, p in zip(ev.reds, lp.blocks, strict=True):
                r = max(1, min(rank, p.dim - 1))
                lam, vec = red.eigh(r)
                shift = gamma + (float(red.eigvals[r:].sum()) / (p.dim - r) if tail else 0.0)
                s = Structured(np.full(p.dim, shift), vec, lam)
                structures.append(s)
                steps.append(s.inverse().matvec(red.gradients))
                effective.append(shift)
            rows.append(
                ev.row(
                    dtype="float64",
                    method=name,
                    rank=rank,
                    damping_mode=mode,
                    damping=gamma,
                    effective_damping=float(np.mean(effective)),
                    represented_share=float(sum(s.coef.sum() for s in structures) / ev.trace),
                    memory_floats=sum(s.basis.size + s.coef.size for s in structures) + int(tail) * len(structures),
                    **ev.metrics(structures, steps, gamma, rank),
                )
            )
    for dtype in c.dtypes:
        rows.extend(_large_ginger_rows(ev, settings, dtype, main))
        for rank in ranks:
            rows.extend(_large_run_rows(ev, "qng", "qng", (dtype, rank, lp.decay), settings, rank))
            for name in sorted({k[3] for p in lp.blocks for k in p.proto}):
                rows.extend(_large_run_rows(ev, "proto", name, (dtype, rank, lp.decay, name), settings, rank))
    for name, group in (("diag", "diag"), ("identity", "iso")):
        if name in chosen:
            rows.extend(_large_run_rows(ev, group, name, (main, lp.decay), settings, None))
    return rows


def _large_ginger_rows(
    ev: _WindowEvaluator, settings: list[tuple[str, float, int]], dtype: str, main: str
) -> list[dict[str, Any]]:
    lp, c = ev.lp, ev.lp.config
    rows: list[dict[str, Any]] = []
    variants = [v for v in (("ginger", "plain"), ("ginger-tail", "tail"), ("ginger-fd", "fd")) if v[0] in c.methods]
    if dtype != main:
        variants = [v for v in variants if v[1] == "plain"]
    for rank in sorted({r for _, _, r in settings}):
        runs = lp.runs("ginger", (dtype, rank, lp.decay))
        if runs is not None and variants:
            checks = _large_ginger_checks(ev, runs, rank)
            for mode, gamma, r in settings:
                if r != rank:
                    continue
                for name, variant in variants:
                    effective = [run.tail_damping(gamma, variant) for run in runs]
                    structures = [run.structure(e) for run, e in zip(runs, effective, strict=True)]
                    steps = [
                        run.precondition(red.gradients, e) for run, red, e in zip(runs, ev.reds, effective, strict=True)
                    ]
                    rows.append(
                        ev.row(
                            dtype=dtype,
                            method=name,
                            rank=rank,
                            damping_mode=mode,
                            damping=gamma,
                            effective_damping=float(np.mean(effective)),
                            represented_share=sum(run.lowrank_trace() for run in runs) / ev.trace,
                            nonfinite=sum(int(to_numpy(run.state.num_nonfinite)) for run in runs),
                            memory_floats=sum(run.memory_floats for run in runs),
                            **ev.timing(runs, dtype),
                            **(checks if variant == "plain" else {}),
                            **ev.certified(structures, steps, gamma, rank, runs),
                        )
                    )
        if "ginger-sm" not in c.methods:
            continue
        for mode, gamma, r in settings:
            sm = lp.runs("sm", (dtype, rank, lp.decay, gamma))
            if r != rank or mode != "fixed" or sm is None:
                continue
            structures = [run.structure(gamma) for run in sm]
            steps = [run.precondition(red.gradients, gamma) for run, red in zip(sm, ev.reds, strict=True)]
            rows.append(
                ev.row(
                    dtype=dtype,
                    method="ginger-sm",
                    rank=rank,
                    damping_mode=mode,
                    damping=gamma,
                    effective_damping=gamma,
                    represented_share=sum(run.lowrank_trace() for run in sm) / ev.trace,
                    nonfinite=sum(int(to_numpy(run.state.num_nonfinite)) for run in sm),
                    memory_floats=sum(run.memory_floats for run in sm),
                    **ev.timing(sm, dtype),
                    **_large_ginger_checks(ev, sm, rank, damping=gamma),
                    **ev.certified(structures, steps, gamma, rank, sm),
                )
            )
    return rows


def _large_ginger_checks(
    ev: _WindowEvaluator, runs: list[GingerRun], rank: int, damping: float | None = None
) -> dict[str, float]:
    """Return the trace identity over all blocks and the distance to float64 eigen-path Ginger (max over blocks)."""
    lp = ev.lp
    total = sum(run.lowrank()[1].sum() + run.discarded for run in runs)
    out = {"trace_gap": float(abs(total - ev.trace) / ev.trace)}
    refs = lp.runs("ginger", ("float64", rank, lp.decay))
    if refs is not None and refs[0] is not runs[0]:  # (the float64 eigen path itself: NaN)
        gamma = lp.config.damping if damping is None else damping
        out["dev_from_ginger64"] = max(
            relative_spectral_distance(a.structure(gamma).inverse(), b.structure(gamma).inverse())
            for a, b in zip(runs, refs, strict=True)
        )
        out["sigma_relerr"] = max(
            float(np.abs(a.lowrank()[1] - b.lowrank()[1]).max() / max(b.lowrank()[1][0], np.finfo(float).tiny))
            for a, b in zip(runs, refs, strict=True)
        )
    return out


def _large_run_rows(  # noqa: PLR0917 - internal
    ev: _WindowEvaluator,
    group: str,
    name: str,
    key: tuple[Any, ...],
    settings: list[tuple[str, float, int]],
    rank: int | None,
) -> list[dict[str, Any]]:
    """Rows of QNG, a protocol method (one rank: ``rank``), or the diagonal EMA / scaled identity (every setting)."""
    lp = ev.lp
    runs = lp.runs(group, key)
    if runs is None:
        return []
    dtype = key[0]
    rows = []
    for mode, gamma, r in settings:
        if rank is not None and r != rank:
            continue
        if rank is None and mode == "fixed" and r != settings[0][2]:
            continue  # diag and identity do not depend on τ: one fixed-damping row per γ
        structures = [run.structure(gamma) for run in runs]
        steps = [run.precondition(red.gradients, gamma) for run, red in zip(runs, ev.reds, strict=True)]
        if group == "qng":
            effective = float(np.mean([run.implicit_damping for run in runs]))
            share = sum(float(s.coef.sum()) for s in structures) / ev.trace
        elif group == "proto":
            effective = gamma if runs[0].needs_damping else float(np.mean([s.diagonal.mean() for s in structures]))
            share = sum(run.lowrank_trace(gamma) for run in runs) / ev.trace
        else:
            effective = float(np.mean([s.diagonal.mean() for s in structures])) if group == "iso" else gamma
            share = sum(run.lowrank_trace() for run in runs) / ev.trace
        rows.append(
            ev.row(
                dtype=dtype,
                method=name,
                rank=r if (rank is not None or mode == "equal") else "",
                damping_mode=mode,
                damping=gamma,
                effective_damping=effective,
                represented_share=share,
                nonfinite=sum(_nonfinite(run.state) for run in runs) if group in {"qng", "proto"} else math.nan,
                memory_floats=sum(run.memory_floats for run in runs),
                **ev.timing(runs, dtype),
                **ev.certified(structures, steps, gamma, rank, runs),
            )
        )
    return rows


def _run_large_pass(config: StudyConfig, stream: str, seed: int, report: Callable[[int], None]) -> StudyResult:
    """One pass over a stream with d > ``DENSE_LIMIT``: windows of the exact EMA, metrics matrix-free."""
    xp = namespace_by_name(config.backend, float64="float64" in config.dtypes)
    out = StudyResult(config)
    lp = _build_large_pass(config, stream, seed, xp)
    steps = config.steps_of(stream)
    series = set(_checkpoints(steps, config.large_checkpoints))
    done = 0
    for item in _stream_steps(config, stream, seed):
        lp.loss = item.loss
        for sl, p, w in zip(lp.slices, lp.blocks, lp.windows, strict=True):
            w.update(item.curvature[sl])
            _advance(p, item.curvature[sl], item.gradient[sl])
        if item.step == steps or item.step in series:
            ev = _WindowEvaluator(lp, item.step, final=item.step == steps)
            out.rows.extend(_large_rows(ev, final=item.step == steps))
            if item.step == steps:
                lam = np.sort(np.concatenate([r.eigvals for r in ev.reds]))[::-1]
                out.spectra.extend(
                    {
                        "stream": stream,
                        "seed": seed,
                        "decay": lp.decay,
                        "step": item.step,
                        "index": i + 1,
                        "eigval": float(v),
                    }
                    for i, v in enumerate(lam)
                )
        done += 1
        if done == 10 or item.step == steps:
            report(done)
            done = 0
    return out


def _run_pass(config: StudyConfig, stream: str, seed: int, report: Callable[[int], None]) -> StudyResult:
    """One pass over one stream with one seed; ``report(n)`` is called every few steps with the steps done."""
    if config.is_large(stream):
        return _run_large_pass(config, stream, seed, report)
    xp = namespace_by_name(config.backend, float64="float64" in config.dtypes)
    out = StudyResult(config)
    p = _build_pass(config, stream, seed, xp)
    series = set(_checkpoints(config.steps, config.checkpoints))
    done = 0
    for item in _stream_steps(config, stream, seed):
        p.loss = item.loss
        _advance(p, item.curvature, item.gradient)
        if item.step == config.steps:
            out.rows.extend(_evaluate(p, item.step, final=True))
            out.spectra.extend(_spectra(p, item.step))
        elif item.step in series:
            out.rows.extend(_evaluate(p, item.step, final=False))
        done += 1
        if done == 10 or item.step == config.steps:
            report(done)
            done = 0
    return out


_QUEUE: Any = None


def _worker_init(queue: Any, threads: int | None) -> None:
    global _QUEUE  # noqa: PLW0603 - the worker process's progress channel
    _QUEUE = queue
    if threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)


def _worker_pass(config: StudyConfig, stream: str, seed: int) -> StudyResult:
    return _run_pass(config, stream, seed, _QUEUE.put)


def run_study(
    config: StudyConfig | None = None,
    *,
    progress: bool = True,
    jobs: int = 1,
    out_dir: str | os.PathLike | None = None,
    on_pass: Callable[[StudyResult], None] | None = None,
) -> StudyResult:
    """Run a study: every stream × seed, every method × setting, metrics over time and at the end.

    Parameters
    ----------
    config : StudyConfig, optional
        Default: :class:`StudyConfig` ``()`` (the ``lowrank-ggn study`` run).
    progress : bool
        Show a progress bar (tqdm) over all steps of all passes.
    jobs : int
        Number of worker processes; the passes (stream × seed) are
        independent. 1 runs everything in this process. The rows do not
        depend on ``jobs`` (except the measured times).
    out_dir : str or os.PathLike, optional
        A folder to write ``study.csv`` and ``spectra.csv`` to *while* the
        study runs: it is created (with its parents) and checked for writing
        before any computation; both files are started with their headers
        (replacing files of the same names) and every finished pass appends
        its rows and is flushed, so that an interrupted study keeps the
        passes it finished. The files hold the passes in the order they
        finish (with ``jobs`` > 1 not necessarily the order of ``rows``);
        :func:`~lowrank_ggn.studies.write_outputs` rewrites them in the
        order of ``rows``.
    on_pass : callable, optional
        Called in this process with the :class:`StudyResult` of each pass
        (one stream and seed) as soon as it finishes (after the files of
        ``out_dir`` are written).

    Returns
    -------
    StudyResult
        ``rows`` with the keys :data:`COLUMNS` (in the order of the passes:
        ``StudyConfig.passes()``), ``spectra`` (the final eigenvalues of
        every exact EMA) and the elapsed ``seconds``.

    Raises
    ------
    ValueError
        For an invalid ``config`` (:meth:`StudyConfig.validate`), ``jobs``
        not a positive integer, a backend that is not available, or an
        ``out_dir`` that cannot be created or written to; all before any
        computation.
    """
    config = StudyConfig() if config is None else config
    config.validate()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        msg = f"jobs must be a positive integer, got {jobs!r}"
        raise ValueError(msg)
    namespace_by_name(config.backend, float64="float64" in config.dtypes)  # fail early
    finished = _sinks(out_dir, on_pass)
    passes = config.passes()
    result = StudyResult(config)
    t0 = time.perf_counter()
    bar = _progress(progress, total=sum(config.steps_of(stream) for stream, _ in passes))

    def advance(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        if jobs == 1 or len(passes) == 1:
            parts = []
            with _thread_limit(config.threads):
                for stream, seed in passes:
                    parts.append(_run_pass(config, stream, seed, advance))
                    finished(parts[-1])
        else:
            parts = _run_parallel(config, passes, min(jobs, len(passes)), advance, finished)
    finally:
        if bar is not None:
            bar.close()
    for part in parts:
        result.rows.extend(part.rows)
        result.spectra.extend(part.spectra)
    result.seconds = time.perf_counter() - t0
    return result


def _sinks(
    out_dir: str | os.PathLike | None, on_pass: Callable[[StudyResult], None] | None
) -> Callable[[StudyResult], None]:
    """Return the callback for a finished pass: append to the files of ``out_dir`` (checked now), then ``on_pass``."""
    sinks: list[Callable[[StudyResult], None]] = []
    if out_dir is not None:
        from lowrank_ggn.studies._report import StudyFiles

        sinks.append(StudyFiles(out_dir))
    if on_pass is not None:
        sinks.append(on_pass)

    def finished(part: StudyResult) -> None:
        for sink in sinks:
            sink(part)

    return finished


def _run_parallel(
    config: StudyConfig,
    passes: list[tuple[str, int]],
    jobs: int,
    advance: Callable[[int], None],
    finished: Callable[[StudyResult], None],
) -> list[StudyResult]:
    """Run the passes in ``jobs`` processes; ``finished`` sees each result as it arrives; return them in order."""
    import multiprocessing as mp
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    channel = ctx.Queue()

    def drain(timeout: float | None) -> None:
        while True:
            try:
                advance(channel.get(timeout=timeout) if timeout else channel.get_nowait())
            except queue_module.Empty:
                return
            timeout = None

    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(channel, config.threads)) as ex:
        # The large (longest) passes first, so that the small ones fill the other workers meanwhile.
        order = sorted(range(len(passes)), key=lambda i: not config.is_large(passes[i][0]))
        submitted = {i: ex.submit(_worker_pass, config, *passes[i]) for i in order}
        futures = [submitted[i] for i in range(len(passes))]
        pending = set(range(len(futures)))
        while pending:
            drain(0.2)
            for i in sorted(pending):
                if futures[i].done():
                    pending.discard(i)
                    finished(futures[i].result())
        drain(None)
        return [f.result() for f in futures]


def _progress(enabled: bool, *, total: int) -> Any:  # noqa: FBT001
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="lowrank-ggn study", dynamic_ncols=True)


class _thread_limit:  # noqa: N801 - used as a context manager
    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self._ctx: Any = None

    def __enter__(self) -> None:
        if self.threads is not None:
            from threadpoolctl import threadpool_limits

            self._ctx = threadpool_limits(limits=self.threads)

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.unregister()
