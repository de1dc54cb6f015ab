r"""Approximation-error studies: how well rank-τ curvature approximations track the exact EMA.

The studies run Ginger (eigen and Sherman–Morrison paths, float32 and
float64), QNG, a diagonal EMA, a scaled identity, tail-aware damping variants
of Ginger, the oracle (the best rank-τ approximation of the exact EMA) and any
approximation of the library's protocol (:class:`ProtocolRun`) on real
curvature streams (sampled-label Fisher vectors, Eq 8, of models trained with
Adam on scikit-learn's digits) and on synthetic ones, and compare them with the
exact EMA in NumPy float64: a dense matrix up to :data:`DENSE_LIMIT`
parameters, a window of the curvature vectors above (:class:`WindowEMA`,
every metric matrix-free; whole model or one block per parameter array). ``lowrank-ggn study`` runs the default
study; the same functions are importable:

>>> from lowrank_ggn.studies import StudyConfig, run_study, summary_table
>>> result = run_study(StudyConfig.quick(streams=("power",), steps=40), progress=False)  # doctest: +SKIP
>>> print(summary_table(result))  # doctest: +SKIP

Needs the ``studies`` extra (scikit-learn, matplotlib, tqdm, scipy,
threadpoolctl).
"""

from lowrank_ggn.studies._cli import add_study_command
from lowrank_ggn.studies._methods import (
    APPROXIMATIONS,
    DENSE_LIMIT,
    METHODS,
    PROTOCOL_METHODS,
    DiagonalRun,
    ExactEMA,
    GingerRun,
    IsotropicRun,
    ProtocolRun,
    QNGRun,
    Structured,
    operator_structure,
    protocol_templates,
)
from lowrank_ggn.studies._metrics import (
    ExactSpectrum,
    captured_share,
    cosine,
    decrease_fraction,
    diag_lowrank_norm,
    principal_angles,
    relative_spectral_distance,
    spectral_error,
    symmetric_norm,
)
from lowrank_ggn.studies._oracle import WindowEMA, WindowReduction, window_metrics
from lowrank_ggn.studies._report import (
    headline,
    markdown_report,
    plot_study,
    read_study,
    scale_headline,
    scale_markdown,
    summary_table,
    write_csv,
    write_outputs,
)
from lowrank_ggn.studies._runner import COLUMNS, StudyConfig, StudyResult, run_study
from lowrank_ggn.studies._streams import (
    LARGE_STREAMS,
    MLP,
    STREAMS,
    DeepMLP,
    LargeStream,
    SmallCNN,
    SoftmaxRegression,
    StreamStep,
    digits_data,
    fisher_stream,
    large_stream_blocks,
    make_large_stream,
    make_stream,
    parameter_blocks,
    stream_dim,
    synthetic_spectrum,
    synthetic_stream,
)

__all__ = [
    "APPROXIMATIONS",
    "COLUMNS",
    "DENSE_LIMIT",
    "LARGE_STREAMS",
    "METHODS",
    "MLP",
    "PROTOCOL_METHODS",
    "STREAMS",
    "DeepMLP",
    "DiagonalRun",
    "ExactEMA",
    "ExactSpectrum",
    "GingerRun",
    "IsotropicRun",
    "LargeStream",
    "ProtocolRun",
    "QNGRun",
    "SmallCNN",
    "SoftmaxRegression",
    "StreamStep",
    "Structured",
    "StudyConfig",
    "StudyResult",
    "WindowEMA",
    "WindowReduction",
    "add_study_command",
    "captured_share",
    "cosine",
    "decrease_fraction",
    "diag_lowrank_norm",
    "digits_data",
    "fisher_stream",
    "headline",
    "large_stream_blocks",
    "make_large_stream",
    "make_stream",
    "markdown_report",
    "operator_structure",
    "parameter_blocks",
    "plot_study",
    "principal_angles",
    "protocol_templates",
    "read_study",
    "relative_spectral_distance",
    "run_study",
    "scale_headline",
    "scale_markdown",
    "spectral_error",
    "stream_dim",
    "summary_table",
    "symmetric_norm",
    "synthetic_spectrum",
    "synthetic_stream",
    "window_metrics",
    "write_csv",
    "write_outputs",
]
