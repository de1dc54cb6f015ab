"""The library's layering, checked from its source: no private name crosses a module boundary.

Computation lives in the declared internal package ``lowrank_ggn._core``; every
other module is a face over it. A face may import ``lowrank_ggn._core`` and the
private modules of its own package (a package re-exporting its private
modules, siblings sharing a helper), but never a private module of another
package, and never a private (underscore) name from any module. The test parses
every module's imports, so it also catches imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lowrank_ggn
from lowrank_ggn._core import checks

ROOT = Path(lowrank_ggn.__file__).parent
PACKAGE = "lowrank_ggn"


def _module_name(path: Path) -> str:
    parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    """The package a module lives in (a package's ``__init__`` belongs to the package itself)."""
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, path: Path) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _private_component(module: str) -> str | None:
    """The first underscore component of a dotted module path below ``lowrank_ggn``, if any."""
    for part in module.split(".")[1:]:
        if part.startswith("_") and not part.startswith("__"):
            return part
    return None


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _violations(path: Path, source: str | None = None) -> list[str]:
    """Every private import of the module at ``path`` (its text, or ``source`` in its place)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    here = _package_of(path)
    where = path.relative_to(ROOT.parent)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _resolve(node, path)
            targets = [
                (f"{module}.{a.name}", None) if _is_module(f"{module}.{a.name}") else (module, a.name)
                for a in node.names
            ]
        elif isinstance(node, ast.Import):
            targets = [(a.name, None) for a in node.names]
        else:
            continue
        for module, name in targets:
            if module != PACKAGE and not module.startswith(PACKAGE + "."):
                continue
            if name is not None and name.startswith("_") and not name.startswith("__"):
                found.append(f"{where}:{node.lineno} imports the private name {name!r} from {module}")
            private = _private_component(module)
            if private is None or module == f"{PACKAGE}._core" or module.startswith(f"{PACKAGE}._core."):
                continue
            owner = module[: module.index("." + private)]
            if owner != here:
                found.append(f"{where}:{node.lineno} imports {module}, private to {owner}")
    return found


def test_no_private_name_crosses_a_module_boundary():
    paths = sorted(ROOT.rglob("*.py"))
    assert len(paths) > 30  # the walk found the library
    violations = [v for p in paths for v in _violations(p)]
    assert not violations, "\n".join(violations)


def test_the_rule_catches_what_it_forbids():
    """The checker itself, on snippets placed in ``lowrank_ggn/optim/``: forbidden forms are reported."""
    where = ROOT / "optim" / "snippet.py"
    cases = {
        "from lowrank_ggn._ginger import _check_state": 2,  # a private name, from another package's module
        "from lowrank_ggn._ginger import ginger_init": 1,  # another package's private module
        "from lowrank_ggn.backends._compat import device_of": 1,
        "from lowrank_ggn.backends import _compat": 1,
        "import lowrank_ggn._qng": 1,
        "from lowrank_ggn._core.ginger import _eigen_term": 1,  # private names stay private in _core too
        "def f():\n    from lowrank_ggn._qng import qng_init": 1,  # imports inside functions count
        "from lowrank_ggn._core.ginger import update": 0,
        "from lowrank_ggn._core import ginger": 0,
        "from lowrank_ggn.optim._options import DEFAULT_RANK": 0,  # a private module of its own package
        "from lowrank_ggn.optim import _options": 0,
        "from . import _options": 0,
        "from lowrank_ggn.backends import device_of": 0,
        "import numpy as _np": 0,
    }
    for source, expected in cases.items():
        assert len(_violations(where, source)) == expected, source


def test_state_field_tables_match_the_state_classes():
    """The core checks states by field names; they must be those of the public NamedTuples."""
    assert lowrank_ggn.GingerState._fields == checks.GINGER_FIELDS
    assert lowrank_ggn.QNGState._fields == checks.QNG_FIELDS
    assert lowrank_ggn.GingerProductState._fields == checks.PRODUCT_FIELDS
