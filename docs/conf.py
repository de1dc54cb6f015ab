"""Sphinx configuration of the lowrank_ggn documentation.

Build with ``make -C docs html`` (warnings are errors); see ``docs/README.md``.
Nothing here uses the network: MathJax is served from ``_static/mathjax``,
there is no intersphinx, and the gallery scripts use only installed packages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Document the package of this checkout (also when it is not installed).
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))
# The gallery scripts run at build time in quick mode (smaller problems).
os.environ.setdefault("LOWRANK_GGN_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The gallery's matrices are small: BLAS threads would only contend for the cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import re  # noqa: E402
import subprocess  # noqa: E402

import lowrank_ggn  # noqa: E402

# -- Numerical verification report ----------------------------------------------
# ``proofs_checks`` runs at build time (NumPy float64, full mode, fixed seed) and the
# verification page includes its report, so every number on it is reproduced by the build.

PROOFS_SEED = 20261129
_report = HERE / "generated" / "proofs_report.md"
_report.parent.mkdir(parents=True, exist_ok=True)
_run = subprocess.run(  # noqa: S603 - a fixed command of this repository
    # A path relative to the repository root: the report prints its command.
    [sys.executable, "-m", "proofs_checks", "--seed", str(PROOFS_SEED), "--out", "docs/generated/proofs_report.md"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
)
if _run.returncode != 0:
    raise RuntimeError("proofs_checks failed:\n" + _run.stdout + _run.stderr)
# The report's HTML anchors become MyST targets, prefixed so that they cannot collide with
# the labels of other pages.
_text = re.sub(r'<a id="([^"]+)"></a>', r"(pc-\1)=", _report.read_text(encoding="utf-8"))
_report.write_text(re.sub(r"\]\(#([^)]+)\)", r"](#pc-\1)", _text), encoding="utf-8")

# -- Approximation-error study ---------------------------------------------------
# The quick study runs at build time, exactly as a user runs it, and the studies page
# includes its report's tables and headline and embeds its figures, so that every number
# there is reproduced by the build. About half a minute on two cores.

_study = subprocess.run(
    [sys.executable, "-m", "lowrank_ggn.cli", "study", "--quick", "--out", "docs/generated/study", "--no-progress"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
)
if _study.returncode != 0:
    raise RuntimeError("lowrank-ggn study --quick failed:\n" + _study.stdout + _study.stderr)

# -- Sharding report -------------------------------------------------------------
# ``benchmarks/sharding_report.py`` compiles the sharded programs for 1-8 simulated devices
# and the page on several devices includes its tables: per-device memory and communication
# are read from the programs the build compiles.

_sharding = HERE / "generated" / "sharding_report.md"
_sharding_run = subprocess.run(  # noqa: S603 - a fixed command of this repository
    [sys.executable, str(ROOT / "benchmarks" / "sharding_report.py"), "--out", str(_sharding)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    check=False,
)
if _sharding_run.returncode != 0:
    raise RuntimeError("benchmarks/sharding_report.py failed:\n" + _sharding_run.stdout + _sharding_run.stderr)

# -- Project -------------------------------------------------------------------

project = "lowrank_ggn"
author = "lowrank_ggn developers"
copyright = "lowrank_ggn developers"  # noqa: A001 - Sphinx's name
release = lowrank_ggn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinxcontrib.bibtex",
    "api_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "README.md",
    "generated/proofs_report.md",  # included by verification.md
    "generated/study/*.md",  # the study's report, included by studies.md
    "studies_headline.md",  # headline.md of a default study run, included by studies.md
    "generated/sharding_report.md",  # included by distributed.md
    "benchmarks_results/*.md",  # tables of benchmarks/report.py, included in benchmarks.md
    "**.ipynb_checkpoints",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
]
templates_path = ["_templates"]
nitpicky = False
default_role = "py:obj"
pygments_style = "default"

# -- MathJax, served locally ---------------------------------------------------

mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {
    "tex": {
        "tags": "none",
        "macros": {
            "diag": r"\operatorname{diag}",
            "tr": r"\operatorname{tr}",
            "rank": r"\operatorname{rank}",
            "span": r"\operatorname{span}",
        },
    },
    "options": {"menuOptions": {"settings": {"assistiveMml": False}}},
}

# -- API reference -------------------------------------------------------------

api_package = "lowrank_ggn"
api_group_order = [
    "lowrank_ggn._approximation",
    "lowrank_ggn._ginger",
    "lowrank_ggn._product",
    "lowrank_ggn._qng",
    "lowrank_ggn._operator",
    "lowrank_ggn._eigen_update",
    "lowrank_ggn._sherman_morrison",
    "lowrank_ggn._reference",
    "lowrank_ggn.checkpoint",
    "lowrank_ggn.backends._compat",
    "lowrank_ggn.backends._select",
    "lowrank_ggn.backends",
    "lowrank_ggn.studies._streams",
    "lowrank_ggn.studies._methods",
    "lowrank_ggn.studies._metrics",
    "lowrank_ggn.studies._runner",
    "lowrank_ggn.studies._report",
]
api_group_titles = {
    "lowrank_ggn._approximation": "The approximation protocol",
    "lowrank_ggn.backends._select": "The backend table",
    "lowrank_ggn._ginger": "Ginger",
    "lowrank_ggn._qng": "QNG",
    "lowrank_ggn._operator": "The damped operator",
    "lowrank_ggn._eigen_update": "Rank-one eigen-update",
    "lowrank_ggn._sherman_morrison": "Sherman–Morrison step",
    "lowrank_ggn._reference": "Dense references",
    "lowrank_ggn.checkpoint": "Checkpoints",
    "lowrank_ggn.backends._compat": "Namespaces, arrays and devices",
    "lowrank_ggn.backends": "Dtypes, devices and tracing",
    "lowrank_ggn._product": "Ginger in product form",
    "lowrank_ggn.studies._streams": "Curvature streams",
    "lowrank_ggn.studies._methods": "Methods and the exact EMA",
    "lowrank_ggn.studies._metrics": "Metrics",
    "lowrank_ggn.studies._runner": "Running a study",
    "lowrank_ggn.studies._report": "Reporting",
    "lowrank_ggn.sharding": "Sharded states and steps",
    "lowrank_ggn._hlo": "Collectives of a compiled program",
}

autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"
autodoc_default_options = {"member-order": "bysource"}
add_module_names = False

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Every check runs, less five: ES01 (extended summary), SA01 (See Also) and
# EX01 (Examples) are not required of every name; PR08 and RT04 ask that a
# description start with a capital letter, and ours deliberately start with the
# symbol they describe (σ, γ, κ).
numpydoc_validation_checks = {"all", "ES01", "SA01", "EX01", "PR08", "RT04"}
# GL02 (placement of the closing quotes) reads ``obj.__doc__``. For a constant such as a
# tuple that is the docstring of its type, not the string written after the assignment
# (which autodoc shows and the other checks validate); Python's ``pydoc.getdoc`` finds no
# docstring of the object's own there, and the report's docstring is empty. Skip GL02 then.
numpydoc_validation_overrides = {"GL02": [r"\A\Z"]}
# An Enum's signature is Enum's functional API (value, names, module, ...), not ours; a
# typing.Protocol's is typing's placeholder ``(*args, **kwargs)`` (a protocol is not instantiated).
numpydoc_validation_exclude = {r"lowrank_ggn\.backends\.Backend$", r"lowrank_ggn\.Approximation$"}

# -- Gallery -------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples")],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"/_",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("lowrank_ggn",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"lowrank_ggn": None},
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 1,
    "show_memory": False,
    "write_computation_times": False,
}

# -- Bibliography --------------------------------------------------------------

bibtex_bibfiles = ["references.bib"]
bibtex_default_style = "plain"
bibtex_reference_style = "author_year"

# -- MyST ----------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"lowrank_ggn {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}
# Pages without sub-pages have nothing to show in the left sidebar.
html_sidebars = {
    page: []
    for page in (
        "index",
        "getting_started",
        "mathematics",
        "verification",
        "studies",
        "backends",
        "distributed",
        "references",
    )
}
html_sidebars["auto_examples/*"] = []
