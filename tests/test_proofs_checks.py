"""The numerical checks of the paper (`python -m proofs_checks`): quick runs, the report, failure paths."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

import lowrank_ggn as lg
import proofs_checks
from proofs_checks.__main__ import main
from proofs_checks._registry import Check, Measurement, Outcome, Result


def _run(tmp_path, *args):
    out = tmp_path / "report.md"
    code = main(["--quick", "--seed", "12345", "--out", str(out), *args])
    return code, out.read_text(encoding="utf-8")


def _assert_complete_report(text, n_checks, backend, dtype):
    assert text.startswith("# Numerical checks of the paper's statements")
    assert f"**{n_checks} of {n_checks} checks pass**" in text
    assert "| # | statement | what is checked | inputs | largest error or margin |" in text
    for c in proofs_checks.all_checks():
        assert f'<a id="{c.key}"></a>' in text
    assert "**FAIL**" not in text
    assert "**ERROR**" not in text
    assert f"| {backend} | {dtype} |" in text
    assert "--seed 12345" in text  # the command reproduces the run


def test_quick_mode_numpy_float64_passes(tmp_path):
    code, text = _run(tmp_path)
    assert code == 0
    _assert_complete_report(text, len(proofs_checks.all_checks()), "numpy", "float64")
    # Every erratum is shown both ways: its printed form fails and is reported as such.
    errata = [c for c in proofs_checks.all_checks() if c.erratum]
    assert len(errata) >= 12
    assert text.count("| fails: ") == len(errata)


def test_quick_mode_array_api_strict_float32_passes(tmp_path):
    """The strict namespace and single precision: every check is written against the array API."""
    pytest.importorskip("array_api_strict")
    code, text = _run(tmp_path, "--backend", "array_api_strict", "--dtype", "float32")
    assert code == 0
    _assert_complete_report(text, len(proofs_checks.all_checks()), "array_api_strict", "float32")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["jax", "torch", "array_api_strict", "numpy"])
def test_quick_mode_every_backend(tmp_path, backend, dtype):
    pytest.importorskip(backend)
    code, text = _run(tmp_path, "--backend", backend, "--dtype", dtype)
    assert code == 0
    _assert_complete_report(text, len(proofs_checks.all_checks()), backend, dtype)


def test_a_broken_primitive_makes_the_run_fail(tmp_path, monkeypatch):
    """A 1% error in Eq 16's κ must be caught, and the exit status must say so."""
    real = lg.kappa_from_sigma

    def wrong(eigvals, damping):
        return real(eigvals, damping) * 1.01

    monkeypatch.setattr(lg, "kappa_from_sigma", wrong)
    code, text = _run(tmp_path, "--only", "eq15-16", "--only", "eq18")
    assert code == 1
    assert text.count("| **FAIL** |") == 2
    assert "0 of 2 checks pass" in text


def test_a_crashing_check_is_reported_and_fails(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        msg = "broken on purpose"
        raise RuntimeError(msg)

    monkeypatch.setattr(lg, "sherman_morrison_step", boom)
    code, text = _run(tmp_path, "--only", "eq17")  # eq17 and the err-eq17-* errata
    assert code == 1
    assert "**ERROR**" in text
    assert "RuntimeError: broken on purpose" in text


def test_a_printed_form_that_holds_fails_the_check():
    """An erratum whose printed form does not fail is not demonstrated: the check fails."""
    chk = Check("k", section="§0", statement="s", what="w", func=lambda ctx: Outcome("i"), erratum=True)
    good = Outcome("i")
    good.add("corrected", 1e-16, 1e-14)
    good.add("printed", 0.5, 1e-14, form="printed")
    assert Result(chk, good, "numpy", "float64", 0.0).passed
    bad = Outcome("i")
    bad.add("corrected", 1e-16, 1e-14)
    bad.add("printed", 1e-16, 1e-14, form="printed")
    assert not Result(chk, bad, "numpy", "float64", 0.0).passed
    info_only = Outcome("i")
    info_only.add("info", 3.0, form="info")
    assert not Result(chk, info_only, "numpy", "float64", 0.0).passed


@pytest.mark.parametrize("relation", ["<=", "<", ">=", ">", "=="])
def test_nan_never_holds(relation):
    assert not Measurement("x", math.nan, 1.0, relation).ok
    assert not Measurement("x", 1.0, math.nan, relation).ok
    assert Measurement("x", math.nan, 1.0, relation, form="printed").ok  # a printed form giving NaN fails


def test_the_registry_follows_the_paper():
    checks = proofs_checks.all_checks()
    keys = [c.key for c in checks]
    assert len(set(keys)) == len(keys)
    assert keys[0] == "2.1-hessian"
    order = ["sec2_1_ggn_fisher", "sec2_2_qng", "sec2_3_ginger", "sec3_convergence", "sec9_family", "errata"]
    sections = [c.func.__module__.rsplit(".", 1)[1] for c in checks]
    assert sections == sorted(sections, key=order.index)
    for needed in (
        "eq4-6",
        "eq7",
        "eq8",
        "eq9-10",
        "eq11",
        "eq12-13",
        "obs1",
        "eq14",
        "eq15-16",
        "eq17",
        "eq18",
        "eq19",
        "brand",
        "complexity",
        "eigen-sm",
        "lemma1",
        "lemma2",
        "theorem1",
        "err-alg1-literal",
    ):
        assert needed in keys


def test_command_line_entry_point_and_bad_selection(capsys):
    assert main(["--list"]) == 0
    assert "theorem1" in capsys.readouterr().out
    assert main(["--only", "no-such-check"]) == 2
    done = subprocess.run(
        [sys.executable, "-m", "proofs_checks", "--list"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "err-alg1-literal" in done.stdout


def test_seeded_runs_are_reproducible(tmp_path):
    a = main(["--quick", "--seed", "7", "--only", "eq8", "--out", str(tmp_path / "a.md")])
    b = main(["--quick", "--seed", "7", "--only", "eq8", "--out", str(tmp_path / "b.md")])
    assert a == b == 0
    tables = [[ln for ln in (tmp_path / n).read_text().splitlines() if "|" in ln] for n in ("a.md", "b.md")]
    assert tables[0] == tables[1]
