"""The ``lowrank-ggn`` command line: usage errors before any computation, help texts, output folders, stream files.

Every bad argument must be argparse's one-line usage error with exit status 2,
raised before anything is computed or written: the tests replace the
computation by a function that fails the test if it is reached.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn import cli
from lowrank_ggn.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_computation(monkeypatch):
    """Make the demo and the study fail the test if they start computing."""
    studies_runner = pytest.importorskip("lowrank_ggn.studies._runner")

    def refuse(*args, **kwargs):
        raise AssertionError("the computation started although an argument is bad")

    monkeypatch.setattr(cli, "_demo", refuse)
    monkeypatch.setattr(studies_runner, "run_study", refuse)


def usage_error(capsys, argv) -> str:
    """Run ``main(argv)``, expect argparse's usage error (exit 2), return its last line."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.match(r"lowrank-ggn( \w+)?: error: ", last), last
    return last


def _cupy_usable() -> bool:
    from lowrank_ggn.backends._select import namespace_by_name

    try:
        namespace_by_name("cupy")
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- bad arguments (issue item 17)

BAD_DEMO = [
    (["--rank", "300"], "--rank"),  # rank ≥ dim (200)
    (["--rank", "0"], "--rank"),
    (["--decay", "1.5"], "--decay"),
    (["--decay", "0"], "--decay"),
    (["--damping", "-1"], "--damping"),
    (["--damping", "nan"], "--damping"),
    (["--steps", "0"], "--steps"),  # printed NaN and exited 0
    (["--dim", "1"], "--dim"),
    (["--seed", "-1"], "--seed"),
    (["--exponent", "inf"], "--exponent"),
]


@pytest.mark.parametrize(("args", "name"), BAD_DEMO, ids=[" ".join(a) for a, _ in BAD_DEMO])
def test_demo_bad_arguments_are_usage_errors(capsys, no_computation, args, name):
    last = usage_error(capsys, ["demo", *args])
    assert f"argument {name}:" in last


BAD_STUDY = [
    (["--steps", "-5"], "--steps"),
    (["--steps", "0"], "--steps"),
    (["--jobs", "0"], "--jobs"),
    (["--seed", "-1"], "--seed"),  # failed only after running
    (["--ranks", "2,x"], "--ranks"),
    (["--ranks", "0,2"], "--ranks"),
    (["--ranks", "2,,4"], "--ranks"),
    (["--decays", "0.9,1"], "--decays"),
    (["--dampings", "1e-2,0"], "--dampings"),
    (["--dampings", "inf"], "--dampings"),
    (["--methods", "ginger,newton"], "--methods"),
    (["--large-steps", "0"], "--large-steps"),
    (["--streams", "digits-mlp-huge"], "--streams"),
]


@pytest.mark.parametrize(("args", "name"), BAD_STUDY, ids=[" ".join(a) for a, _ in BAD_STUDY])
def test_study_bad_arguments_are_usage_errors(capsys, no_computation, tmp_path, args, name):
    out = tmp_path / "out"
    last = usage_error(capsys, ["study", "--quick", "--out", str(out), *args])
    assert f"argument {name}:" in last
    assert not out.exists()  # nothing written either


def test_study_grid_the_streams_cannot_take_is_a_usage_error(capsys, no_computation, tmp_path):
    last = usage_error(capsys, ["study", "--quick", "--out", str(tmp_path), "--ranks", "2,500"])
    assert "rank" in last  # power/step have d = 500: τ = 500 is not below d


@pytest.mark.skipif(_cupy_usable(), reason="CuPy works here")
def test_study_unavailable_backend_is_a_usage_error(capsys, no_computation, tmp_path):
    last = usage_error(capsys, ["study", "--quick", "--out", str(tmp_path), "--backend", "cupy"])
    assert "argument --backend:" in last
    assert "cupy" in last


# ---------------------------------------------------------------- output folder (issue item 18)


def test_output_folder_that_is_a_file_is_refused_before_computing(capsys, no_computation, tmp_path):
    existing = tmp_path / "results"
    existing.write_text("not a folder")
    last = usage_error(capsys, ["study", "--quick", "--out", str(existing)])
    assert "argument --out:" in last
    assert "existing file" in last
    last = usage_error(capsys, ["study", "--quick", "--out", str(existing / "sub")])
    assert "argument --out:" in last
    assert existing.read_text() == "not a folder"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folder_is_refused_before_computing(capsys, no_computation, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        last = usage_error(capsys, ["study", "--quick", "--out", str(locked / "out")])
    finally:
        locked.chmod(0o700)
    assert "argument --out:" in last


def test_prepare_output_dir_checks_writing(tmp_path, monkeypatch):
    """Writability is tested by writing (so that root, ACLs and read-only mounts are judged alike)."""
    import tempfile

    from lowrank_ggn.studies._report import prepare_output_dir

    assert prepare_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(ValueError, match="cannot be written to"):
        prepare_output_dir(tmp_path / "c")


# ---------------------------------------------------------------- help texts (issue item 19)


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text(capsys):
    text = _help(capsys, [])
    assert "``" not in text
    assert ":mod:" not in text
    assert "demo" in text
    assert "study" in text


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    for add in cli._COMMANDS:
        add(sub)
    return sub.choices[name]


@pytest.mark.parametrize("command", ["demo", "study"])
def test_every_option_has_help(command):
    parser = _subparser(command)
    assert parser.description
    for action in parser._actions:
        assert action.help, action.option_strings


def test_readme_describes_the_demo():
    text = (ROOT / "README.md").read_text()
    assert "lowrank-ggn demo" in text
    for option in ("--stream-file", "--ranks", "--decays", "--dampings", "--methods"):
        assert option in text


def test_demo_runs(capsys):
    assert main(["demo", "--dim", "20", "--rank", "3", "--steps", "15"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out.lower()
    assert "Ginger" in out


def test_reproduce_quick_states_the_grid_it_used(tmp_path, monkeypatch):
    """``results.md`` of a --quick run names its reduced learning-rate grid, not the full one."""
    from experiments import reproduce
    from experiments.reproduce import LR_GRID, Settings, _report

    monkeypatch.setattr(reproduce, "_plots", lambda *args: None)  # no runs: nothing to plot

    settings = Settings.quick()
    acc = {"rows": [], "curves": {}, "costs": []}
    _report(tmp_path, acc, settings, 1.0)
    text = (tmp_path / "results.md").read_text()
    assert "{1,5}×10" not in text
    assert "{" + ", ".join(f"{lr:g}" for lr in settings.lr_grid) + "}" in text
    assert "reduced grid" in text
    _report(tmp_path, acc, settings, 1.0, "python -m experiments.reproduce --quick --out x")
    assert "`python -m experiments.reproduce --quick --out x`" in (tmp_path / "results.md").read_text()
    full = tmp_path / "full"
    full.mkdir()
    _report(full, acc, Settings(), 1.0)
    text = (full / "results.md").read_text()
    assert "{" + ", ".join(f"{lr:g}" for lr in LR_GRID) + "}" in text
    assert "(the full grid)" in text


# ---------------------------------------------------------------- docs (issue item 20)


def test_backends_docs_match_half_precision_behaviour():
    """The docs say what the code does: float16/bfloat16 inputs are promoted, not rejected."""
    text = " ".join((ROOT / "docs" / "backends.md").read_text().split())
    half = r"(half-precision|half precision|float16|bfloat16)"
    for clause in re.split(r"[.;] ", text):
        assert not re.search(half + r"[^.;]*\b(is|are) (rejected|an error)", clause, flags=re.IGNORECASE), clause
    assert re.search(r"float16 and bfloat16 curvature vectors and gradients are converted, exactly", text)
    state = lg.ginger_init(6, 2)
    state = lg.ginger_update(state, np.ones(6, dtype=np.float16), decay=0.9)
    assert state.basis.dtype == np.float64
    assert lg.ginger_precondition(state, np.ones(6, dtype=np.float16), damping=0.1).dtype == np.float16


# ---------------------------------------------------------------- the study (issue items 16, Part B)

pytest.importorskip("sklearn")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


FAST = ["--no-plots", "--no-progress", "--jobs", "1", "--dtype", "float64"]


def test_quick_study_with_steps_at_most_the_largest_rank(tmp_path, capsys):
    """``--quick --steps 8``: τ = 8 ≥ t makes the oracle exact (error 0); the headline divided by it."""
    out = tmp_path / "q"
    assert main(["study", "--quick", "--streams", "power", "--steps", "8", "--out", str(out), *FAST]) == 0
    rows = _rows(out / "study.csv")
    oracle = [r for r in rows if r["method"] == "oracle" and r["rank"] == "8" and r["step"] == "8"]
    assert oracle
    assert all(float(r["inv_spectral_error"]) < 1e-12 for r in oracle)
    assert any(float(r["inv_spectral_error"]) == 0.0 for r in oracle)  # what the ratio divided by
    printed = capsys.readouterr().out
    assert "where the oracle's error is positive" in printed


def test_study_with_a_checkpoint_at_the_first_step(tmp_path):
    """``--steps 3`` puts a checkpoint at step 1, before any step was timed: the time ratio divided 0 by 0."""
    out = tmp_path / "q"
    assert main(["study", "--quick", "--streams", "power", "--steps", "3", "--out", str(out), *FAST]) == 0
    rows = _rows(out / "study.csv")
    first = [r for r in rows if r["step"] == "1" and r["method"] == "ginger"]
    assert first
    assert all(r["time_vs_diag"] == "nan" and r["time_per_step_s"] == "nan" for r in first)
    last = [r for r in rows if r["step"] == "3" and r["method"] == "ginger"]
    assert all(float(r["time_vs_diag"]) > 0 for r in last)


def _stream_file(tmp_path: Path, name: str, shape=(14, 9), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape) * np.arange(1, shape[1] + 1) ** -1.0
    path = tmp_path / f"{name}.npy"
    np.save(path, data)
    return path


GRID = ["--ranks", "2,3", "--decays", "0.9", "--dampings", "0.1,0.01"]


def test_stream_file_and_grid_options(tmp_path):
    path = _stream_file(tmp_path, "mine")
    data = np.load(path)
    out = tmp_path / "out"
    argv = ["study", "--stream-file", str(path), *GRID, "--methods", "exact,oracle,ginger,qng", "--out", str(out)]
    assert main([*argv, *FAST]) == 0
    rows = _rows(out / "study.csv")
    assert {r["stream"] for r in rows} == {"mine"}  # no built-in stream unless asked for
    assert {r["dim"] for r in rows} == {"9"}
    assert {r["seed"] for r in rows} == {"0"}
    assert {r["method"] for r in rows} == {"exact", "oracle", "ginger", "qng"}
    assert {r["rank"] for r in rows} - {""} == {"2", "3"}
    assert {float(r["decay"]) for r in rows} == {0.9}
    assert {float(r["damping"]) for r in rows if r["damping_mode"] == "fixed"} == {0.1, 0.01}
    # Without --steps the study takes the file's T steps; the default setting moved into the grid (τ 3, γ 0.01).
    assert max(int(r["step"]) for r in rows) == data.shape[0]
    series = {
        (r["rank"], r["damping"]) for r in rows if r["step"] != str(data.shape[0]) and r["damping_mode"] == "fixed"
    }
    assert {rank for rank, _ in series} - {""} == {"3"}
    assert {float(g) for _, g in series} == {0.01}
    # The file is what the methods saw: the final exact EMA has the spectrum of the EMA of the rows.
    spectra = _rows(out / "spectra.csv")
    got = np.array([float(s["eigval"]) for s in spectra])
    want = np.linalg.eigvalsh(lg.ema_dense(data, decay=0.9))[::-1]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14 * want[0])
    assert "`mine` (T = 14, d = 9)" in (out / "report.md").read_text()


def test_stream_file_with_builtin_streams_and_steps(tmp_path):
    path = _stream_file(tmp_path, "mine", shape=(30, 12))
    out = tmp_path / "out"
    argv = ["study", "--stream-file", str(path), "--streams", "power", "--steps", "6", *GRID, "--out", str(out)]
    assert main([*argv, "--methods", "ginger,oracle", *FAST]) == 0
    rows = _rows(out / "study.csv")
    assert {r["stream"] for r in rows} == {"power", "mine"}
    assert max(int(r["step"]) for r in rows) == 6


def _bad_files(tmp_path: Path) -> list[tuple[list[str], str]]:
    good = _stream_file(tmp_path, "good")
    cases = []
    for name, data in (
        ("vector", np.ones(5)),
        ("cube", np.ones((3, 4, 5))),
        ("nan", np.where(np.eye(6, 5) > 0, np.nan, 1.0)),
        ("inf", np.full((4, 5), np.inf)),
        ("ints", np.ones((4, 5), dtype=np.int64)),
        ("complex", np.ones((4, 5), dtype=np.complex128)),
        ("empty", np.ones((0, 5))),
        ("narrow", np.ones((4, 1))),
    ):
        np.save(tmp_path / f"{name}.npy", data)
        cases.append((["--stream-file", str(tmp_path / f"{name}.npy")], "--stream-file"))
    (tmp_path / "text.npy").write_text("not an array")
    np.save(tmp_path / "power.npy", np.ones((4, 5)))
    (tmp_path / "plain.txt").write_text("1 2 3")
    cases += [
        (["--stream-file", str(tmp_path / "text.npy")], "--stream-file"),
        (["--stream-file", str(tmp_path / "missing.npy")], "--stream-file"),
        (["--stream-file", str(tmp_path / "plain.txt")], "--stream-file"),
        (["--stream-file", str(tmp_path / "power.npy")], "--stream-file"),  # the name of a built-in stream
        (["--stream-file", str(good), "--stream-file", str(good)], "stream"),  # two streams of one name
        (["--stream-file", str(good), "--steps", "15"], "steps"),  # T = 14 < 15
        (["--stream-file", str(good), "--ranks", "9"], "rank"),  # d = 9
    ]
    return cases


def test_bad_stream_files_are_usage_errors(tmp_path, capsys, no_computation):
    for args, name in _bad_files(tmp_path):
        last = usage_error(capsys, ["study", "--out", str(tmp_path / "out"), *args])
        assert name in last, (args, last)
        assert not (tmp_path / "out").exists()


def test_large_stream_options_reach_the_configuration(tmp_path):
    """--streams takes the large streams, --large-steps their steps; --ranks replaces their default ranks."""
    from lowrank_ggn.studies import DENSE_LIMIT, LARGE_STREAMS
    from lowrank_ggn.studies._cli import _config

    parser = argparse.ArgumentParser()
    cli_sub = parser.add_subparsers()
    from lowrank_ggn.studies import add_study_command

    add_study_command(cli_sub)
    args = parser.parse_args(["study", "--streams", "power", "digits-mlp-wide-blocks", "--large-steps", "7"])
    config = _config(args)
    config.validate()
    assert config.streams == ("power", "digits-mlp-wide-blocks")
    assert config.is_large("digits-mlp-wide-blocks")
    assert not config.is_large("power")
    assert LARGE_STREAMS["digits-mlp-wide-blocks"].model.dim > DENSE_LIMIT
    assert config.steps_of("digits-mlp-wide-blocks") == 7
    assert config.steps_of("power") == config.steps
    assert config.ranks_of("digits-mlp-wide-blocks") == type(config)().large_ranks  # the default large grid
    assert config.passes() == [("power", s) for s in config.seeds] + [("digits-mlp-wide-blocks", config.seeds[0])]
    args = parser.parse_args(["study", "--streams", "digits-mlp-wide", "--ranks", "4,16"])
    config = _config(args)
    config.validate()
    assert config.ranks_of("digits-mlp-wide") == (4, 16)
