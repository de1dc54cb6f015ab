"""The documentation's API-reference checker finds every kind of undocumented public name.

The checker (``docs/_ext/api_reference.py``) makes the Sphinx build fail; these
tests run it on a small synthetic package so that each failure it must catch is
exercised, and on ``lowrank_ggn`` itself, which must pass.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("sphinx")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_ext"))
api_reference = importlib.import_module("api_reference")

PACKAGE = textwrap.dedent(
    '''
    """A synthetic package."""
    from typing import NamedTuple

    from pkgdoc._impl import BARE, SHARED, hidden

    __all__ = ["Pair", "documented", "hidden", "undocumented", "CONSTANT", "LOOSE", "SHARED", "BARE"]

    CONSTANT = 3
    """A documented constant."""

    LOOSE = 4


    def documented():
        """Do something."""


    def undocumented():
        pass


    class Pair(NamedTuple):
        """A pair."""

        first: int
        """The first."""
        second: int
    '''
)

IMPL = textwrap.dedent(
    '''
    """Implementation: the place that defines ``hidden``."""


    def hidden():
        """Defined in a private module, exported by the package."""


    SHARED = ("a", "b")
    """A constant documented where it is assigned, exported by the package."""

    BARE = ("c",)
    '''
)


@pytest.fixture
def package(tmp_path, monkeypatch):
    root = tmp_path / "pkgdoc"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text(PACKAGE)
    (root / "_impl.py").write_text(IMPL)
    (root / "sub" / "__init__.py").write_text('"""A public subpackage."""\n__all__ = []\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "pkgdoc"
    for name in [m for m in sys.modules if m == "pkgdoc" or m.startswith("pkgdoc.")]:
        del sys.modules[name]


def test_public_modules_skip_private_ones(package):
    assert api_reference.public_modules(package) == ["pkgdoc", "pkgdoc.sub"]


def test_every_kind_of_gap_is_reported(package):
    names = ("Pair", "documented", "hidden", "undocumented", "CONSTANT", "LOOSE", "SHARED", "BARE")
    everything = {f"pkgdoc.{n}" for n in names}
    problems = api_reference.undocumented(package, documented=everything - {"pkgdoc.documented"})
    assert sorted(problems) == sorted(
        [
            "pkgdoc.documented is public but not in the API reference",
            "pkgdoc.undocumented has no docstring",
            "pkgdoc.LOOSE (data) has no docstring: add a string literal after its assignment",
            "pkgdoc.BARE (data) has no docstring: add a string literal after its assignment",
            "pkgdoc.Pair.second (a NamedTuple field) has no attribute docstring",
        ]
    )


def test_names_are_grouped_by_defining_module(package, monkeypatch):
    config = type("Config", (), {"api_group_titles": {}, "api_group_order": ["pkgdoc._impl"]})()
    groups = api_reference.groups_of(package, config)
    assert [(g.module, g.title) for g in groups] == [
        ("pkgdoc._impl", "Implementation"),
        ("pkgdoc", "A synthetic package"),
    ]
    assert groups[0].names == ["hidden", "SHARED"]  # a re-exported constant is grouped where it is documented
    page = api_reference.render_page(package, groups)
    assert ".. automodule:: pkgdoc" in page
    assert "   hidden" in page


def test_a_reexported_constant_gets_the_docstring_of_its_assignment(package):
    """autodoc would show the docstring of ``tuple``; the extension substitutes the one written in ``_impl``."""
    importlib.import_module(package)  # autodoc has imported it when the event fires
    app = type("App", (), {"config": type("Config", (), {"api_package": package})()})()
    lines = ["Built-in immutable sequence."]
    api_reference.reexported_data_docstring(app, "data", "pkgdoc.SHARED", ("a", "b"), None, lines)
    assert lines[0] == "A constant documented where it is assigned, exported by the package."
    for what, name in (("data", "pkgdoc.CONSTANT"), ("data", "pkgdoc.BARE"), ("function", "pkgdoc.hidden")):
        lines = ["unchanged"]
        api_reference.reexported_data_docstring(app, what, name, None, None, lines)
        assert lines == ["unchanged"], name


def test_a_public_module_without_all_is_an_error(package, tmp_path):
    from sphinx.errors import ExtensionError

    (tmp_path / package / "nolist.py").write_text('"""No __all__."""\n')
    importlib.invalidate_caches()
    with pytest.raises(ExtensionError, match="has no __all__"):
        api_reference.undocumented(package, documented=set())


def test_lowrank_ggn_is_fully_documented():
    """Every public name of the library has a docstring (the reference itself is checked by the build)."""
    names = set()
    for modname in api_reference.public_modules("lowrank_ggn"):
        module = importlib.import_module(modname)
        names |= {f"{modname}.{n}" for n in api_reference.public_names(module)}
    assert api_reference.undocumented("lowrank_ggn", documented=names) == []
