"""Generate the API reference from ``__all__`` and check that every public name is documented.

The reference has one page per public module: the package itself and every
module or subpackage whose dotted path has no component starting with ``_``
(``lowrank_ggn.backends``, ``lowrank_ggn.cli``, and whatever is added later).
Each page lists the module's ``__all__`` in autosummary tables, grouped by the
private module that defines each name, so a new public subpackage or a new name
in an ``__all__`` appears in the reference without editing the docs.

After reading, the build fails (non-zero exit status) when

* a public module has no ``__all__``, or its ``__all__`` names something missing;
* a name of an ``__all__`` was not documented (no ``py`` object in the inventory);
* a public function, class or constant has no docstring of its own;
* a field of a public ``NamedTuple`` has no attribute docstring.

A class page lists the members the class inherits from a base class of the
package (so that a method written once on a private base appears on every
public subclass) but not those inherited from elsewhere (``tuple``,
``torch.optim.Optimizer``): see :func:`skip_foreign_inherited`.

A constant (data) is documented by a string literal after its assignment. A
public module may re-export a constant from the private module that assigns
it; the docstring is then read there (:func:`data_home`), both for the check
and for the page, where autodoc would otherwise show the docstring of the
value's type (``tuple``, ``int``).

Configuration (in ``conf.py``): ``api_package`` (the top-level package),
``api_group_titles`` (defining module -> section title; modules not listed get
the part of their docstring's first line before ``:``) and ``api_group_order``
(defining modules listed first, in this order).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

logger = logging.getLogger(__name__)

PAGES_DIR = Path("generated") / "api"
"""Where the module pages are written, relative to the source directory."""


@dataclass
class Group:
    """Names of one public module that share a defining module."""

    module: str
    title: str
    intro: str
    names: list[str] = field(default_factory=list)


def is_public_path(dotted: str) -> bool:
    """Return True when no component of a dotted module path is private."""
    return not any(part.startswith("_") for part in dotted.split("."))


def public_modules(package: str) -> list[str]:
    """Return the package and its public submodules, sorted (package first)."""
    pkg = importlib.import_module(package)
    found = [info.name for info in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")]
    return sorted([package, *filter(is_public_path, found)])


def public_names(module: ModuleType) -> list[str]:
    """Return the documented names of a module: its ``__all__`` less dunder names."""
    names = getattr(module, "__all__", None)
    if names is None:
        msg = f"public module {module.__name__} has no __all__: the API reference is built from it"
        raise ExtensionError(msg)
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        msg = f"{module.__name__}.__all__ names missing attributes: {missing}"
        raise ExtensionError(msg)
    return [n for n in names if not (n.startswith("__") and n.endswith("__"))]


_MISSING = object()


def data_home(module: ModuleType, name: str) -> str | None:
    """Return the module whose source documents the constant ``module.name``, or None.

    That is ``module`` itself when it assigns and documents the name;
    otherwise the first module of the same top-level package (loaded, private
    ones included, in sorted order) that documents an attribute of that name
    bound to the very same object, the module a re-export comes from.
    """
    obj = getattr(module, name)
    if ("", name) in _attr_docs(module.__name__):
        return module.__name__
    top = module.__name__.split(".")[0]
    candidates = sorted(m for m in list(sys.modules) if m == top or m.startswith(top + "."))
    for modname in candidates:
        other = sys.modules.get(modname)
        if other is None or modname == module.__name__ or getattr(other, name, _MISSING) is not obj:
            continue
        if ("", name) in _attr_docs(modname):
            return modname
    return None


def defining_module(module: ModuleType, name: str) -> str:
    """Return the module that defines ``module.name``.

    For a function or a class, its ``__module__``; for a constant, the module
    that documents it (:func:`data_home`), else ``module`` itself.
    """
    obj = getattr(module, name)
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return getattr(obj, "__module__", module.__name__) or module.__name__
    return data_home(module, name) or module.__name__


def group_title(modname: str, titles: dict[str, str]) -> str:
    """Return the section title of a defining module."""
    if modname in titles:
        return titles[modname]
    doc = inspect.getdoc(importlib.import_module(modname)) or modname
    first = doc.strip().splitlines()[0]
    return first.split(":")[0].strip().rstrip(".") or modname


def group_intro(modname: str, page_module: str) -> str:
    """Return the defining module's docstring without its first line (none for the page's own module)."""
    if modname == page_module:
        return ""
    doc = inspect.getdoc(importlib.import_module(modname)) or ""
    lines = doc.strip().splitlines()
    return "\n".join(lines[1:]).strip()


def groups_of(modname: str, config: Config) -> list[Group]:
    """Group the public names of a module by defining module, in the configured order."""
    module = importlib.import_module(modname)
    groups: dict[str, Group] = {}
    for name in public_names(module):
        home = defining_module(module, name)
        if home not in groups:
            title = group_title(home, config.api_group_titles)
            groups[home] = Group(home, title, group_intro(home, modname))
        groups[home].names.append(name)
    order = list(config.api_group_order)

    def key(group: Group) -> tuple[int, str]:
        return (order.index(group.module) if group.module in order else len(order), group.module)

    return sorted(groups.values(), key=key)


def render_page(modname: str, groups: list[Group]) -> str:
    """Return the reStructuredText of one module page."""
    title = f"``{modname}``"
    out = [
        ".. This page is generated by docs/_ext/api_reference.py; do not edit.",
        "",
        title,
        "=" * len(title),
        "",
        f".. automodule:: {modname}",
        "   :no-members:",
        "",
        f".. currentmodule:: {modname}",
        "",
    ]
    for group in groups:
        if len(groups) > 1 or group.module != modname:
            out += [group.title, "-" * len(group.title), ""]
        if group.intro:
            out += [group.intro, ""]
        out += [".. autosummary::", "   :toctree: ..", "   :nosignatures:", ""]
        out += [f"   {name}" for name in group.names]
        out.append("")
    return "\n".join(out)


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (keeps incremental builds incremental)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def generate_pages(app: Sphinx, config: Config) -> None:
    """Write one page per public module into ``generated/api`` (run at ``config-inited``).

    Pages and autosummary stubs of names that are no longer public are deleted,
    so that renaming or removing a name does not break an incremental build.
    """
    outdir = Path(app.srcdir) / PAGES_DIR
    wanted, stubs = {}, set()
    for modname in public_modules(config.api_package):
        groups = groups_of(modname, config)
        wanted[f"{modname}.rst"] = render_page(modname, groups)
        stubs |= {f"{modname}.{name}.rst" for group in groups for name in group.names}
    for folder, keep in ((outdir, wanted), (outdir.parent, stubs)):
        for stale in folder.glob("*.rst") if folder.exists() else ():
            if stale.name not in keep:
                stale.unlink()
    for filename, text in wanted.items():
        write_if_changed(outdir / filename, text)


def _own_docstring(obj: Any) -> str:
    """Return the docstring an object defines itself (not one inherited or auto-generated)."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__") or ""
        fields = getattr(obj, "_fields", None)
        if fields is not None and doc.startswith(f"{obj.__name__}({', '.join(fields)})"):
            return ""  # the docstring that collections.namedtuple writes
        return doc.strip()
    return (getattr(obj, "__doc__", None) or "").strip()


def _attr_docs(modname: str) -> dict[tuple[str, str], list[str]]:
    try:
        return ModuleAnalyzer.for_module(modname).find_attr_docs()
    except Exception:  # noqa: BLE001 - no source available: nothing is documented
        return {}


def undocumented(package: str, documented: set[str]) -> list[str]:
    """Return one message per public name that the reference does not document."""
    problems = []
    for modname in public_modules(package):
        module = importlib.import_module(modname)
        for name in public_names(module):
            full = f"{modname}.{name}"
            obj = getattr(module, name)
            if full not in documented:
                problems.append(f"{full} is public but not in the API reference")
            if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj):
                if not _own_docstring(obj):
                    problems.append(f"{full} has no docstring")
            elif data_home(module, name) is None:
                problems.append(f"{full} (data) has no docstring: add a string literal after its assignment")
            fields = getattr(obj, "_fields", None) if inspect.isclass(obj) else None
            if fields:
                docs = _attr_docs(obj.__module__)
                problems += [
                    f"{full}.{f} (a NamedTuple field) has no attribute docstring"
                    for f in fields
                    if (obj.__qualname__, f) not in docs
                ]
    return problems


def reexported_data_docstring(  # noqa: PLR0917 - the signature of the event
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,  # noqa: ARG001
    options: Any,  # noqa: ARG001
    lines: list[str],
) -> None:
    """Give a re-exported constant the docstring written where it is assigned (``autodoc-process-docstring``).

    It runs before numpydoc (priority 400 < 500), so that numpydoc formats and
    validates that docstring rather than the one of the value's type.
    """
    if what != "data" or not name.startswith(app.config.api_package + "."):
        return
    modname, _, attr = name.rpartition(".")
    module = sys.modules.get(modname)
    if module is None or not hasattr(module, attr):
        return
    home = data_home(module, attr)
    if home is not None and home != modname:
        lines[:] = list(_attr_docs(home)[("", attr)])


def skip_foreign_inherited(  # noqa: PLR0917 - the signature of the event
    app: Sphinx,
    what: str,
    name: str,  # noqa: ARG001
    obj: Any,
    skip: bool,  # noqa: FBT001
    options: Any,  # noqa: ARG001
) -> bool | None:
    """Leave out of a class page the methods defined outside the package (``autodoc-skip-member``).

    The class template documents inherited members; this keeps those of the
    package's own (private) base classes and drops the routines of ``tuple``,
    ``object`` or a framework base class, whose ``__module__`` lies outside
    the package. Returns None (no opinion) for everything else.
    """
    if what != "class" or skip or not inspect.isroutine(obj):
        return None
    package = app.config.api_package
    module = getattr(obj, "__module__", None) or ""
    if module == package or module.startswith(package + "."):
        return None
    return True


def check_coverage(app: Sphinx, exception: Exception | None) -> None:
    """Fail the build when a public name is undocumented (run at ``build-finished``).

    It runs at the end of every build, incremental ones included, against the
    package as it is now. Each gap is a warning, and the build's exit status is
    non-zero even without ``-W``.
    """
    if exception is not None:
        return
    documented = set(app.env.get_domain("py").objects)
    problems = undocumented(app.config.api_package, documented)
    for problem in problems:
        logger.warning(problem, type="api_reference", subtype="undocumented")
    if problems:
        app.statuscode = 1


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the configuration values and the event handlers."""
    app.add_config_value("api_package", "", "env", types=[str])
    app.add_config_value("api_group_titles", {}, "env", types=[dict])
    app.add_config_value("api_group_order", [], "env", types=[list, tuple])
    app.connect("config-inited", generate_pages)
    app.connect("autodoc-process-docstring", reexported_data_docstring, priority=400)
    app.connect("autodoc-skip-member", skip_foreign_inherited)
    app.connect("build-finished", check_coverage)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
