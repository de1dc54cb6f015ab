r"""Checkpoints: save and restore states (and any pytree of arrays) to a versioned ``.npz`` file.

:func:`save_checkpoint` writes a :class:`~lowrank_ggn.GingerState`, a
:class:`~lowrank_ggn.QNGState`, or any nesting of NamedTuples, tuples,
lists and dicts (``str`` or ``int`` keys) whose leaves are arrays of a
supported backend, Python scalars (``bool``, ``int``, ``float``, ``str``) or
``None`` — which covers optax optimiser states and ``torch.optim`` state
dicts. :func:`load_checkpoint` restores it bit for bit, on the backend it came
from or on a requested namespace, device and dtype.

File format (version 1)
-----------------------
An uncompressed NumPy ``.npz`` archive (a zip file, each member CRC-32
checked) holding

* ``leaf_00000``, ``leaf_00001``, …: one ``.npy`` member per array leaf, in
  depth-first order, with the exact bits of the array (``bfloat16`` as its
  ``uint16`` bit pattern);
* ``__manifest__``: a ``uint8`` array holding UTF-8 JSON::

      {"format": "lowrank_ggn.checkpoint", "version": 1,
       "library_version": "0.1.0", "backends": ["jax"],
       "tree": <node>, "leaves": [<leaf>, ...], "metadata": {...}}

  where a ``<leaf>`` is ``{"key", "path", "backend", "device", "dtype",
  "shape", "sha256", "numpy_scalar"}`` (``path`` names the leaf in the tree,
  e.g. ``.basis`` or ``['state'][0]['exp_avg']``; ``sha256`` is the digest of
  the stored bytes; ``numpy_scalar`` marks a NumPy scalar such as
  ``np.int32(3)``, restored as one on NumPy) and a ``<node>`` is one of ``{"kind": "array", "leaf": i}``,
  ``{"kind": "none"}``, ``{"kind": "bool" | "int" | "str", "value": v}``,
  ``{"kind": "float", "value": float.hex(v)}``,
  ``{"kind": "tuple" | "list", "items": [...]}``,
  ``{"kind": "dict", "keys": [["str" | "int", k], ...], "items": [...]}`` or
  ``{"kind": "namedtuple", "type": "module:QualName", "fields": [...],
  "items": [...]}``.

Files are written atomically: to a temporary file in the target directory,
flushed to disk, then renamed over the target, so a crash leaves either the
old file or the new one. Loading reads and verifies everything (format,
version, members, dtypes, shapes, digests, and the structure of ``like``)
before building any array, and raises :class:`CheckpointError` on the first
problem; a truncated, corrupted or mismatched file never yields a partial
state.

Optimiser states
----------------
An optimiser front-end needs nothing more: its state is a pytree.

* optax: ``save_checkpoint(path, opt_state)``; restore with
  ``load_checkpoint(path, like=tx.init(params))`` (the template gives the
  NamedTuple types, the namespace and the device; without ``like`` the types
  are found when their modules are imported).
* ``torch.optim``: ``save_checkpoint(path, {"model": model.state_dict(),
  "optimizer": optimizer.state_dict()})`` and
  ``optimizer.load_state_dict(load_checkpoint(path, device=...)["optimizer"])``
  (integer parameter ids and hyper-parameters are stored as they are).
* A front-end that keeps a :class:`~lowrank_ggn.GingerState` or
  :class:`~lowrank_ggn.QNGState` inside its own NamedTuple state is covered
  the same way; define the NamedTuple at module level so that its
  ``module:QualName`` can be found again.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> import lowrank_ggn as lg
>>> state = lg.ginger_update(lg.ginger_init(100, 4), np.ones(100), decay=0.9)
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ginger.npz"
>>> _ = lg.save_checkpoint(path, state, metadata={"epoch": 3})
>>> restored = lg.load_checkpoint(path)
>>> bool(np.array_equal(restored.basis, state.basis))
True
>>> lg.read_checkpoint_manifest(path)["metadata"]
{'epoch': 3}
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowrank_ggn._core.aliases import Array, ArrayNamespace, Device, DType
from lowrank_ggn.backends import (
    array_namespace,
    backend_name,
    device_of,
    dtype_name,
    from_host_exact,
    is_array,
    is_real_floating,
    is_traced,
    namespace_by_name,
    resolve_namespace,
    to_host_exact,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "read_checkpoint_manifest",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "lowrank_ggn.checkpoint"
"""The ``format`` field of every manifest."""
CHECKPOINT_VERSION = 1
"""The format version written by this library; files of a later version are refused."""

_MANIFEST = "__manifest__"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, of an unknown format or version, or does not match."""


# --------------------------------------------------------------------------- encoding


_SCALAR_KINDS = (("bool", bool), ("int", int), ("float", float), ("str", str))  # bool before int


def _flatten(tree: Any, path: str, leaves: list[tuple[str, Array]]) -> dict[str, Any]:
    """Describe ``tree`` as a JSON node; append its array leaves to ``leaves``."""
    if tree is None:
        return {"kind": "none"}
    if is_array(tree):
        leaves.append((path, tree))
        return {"kind": "array", "leaf": len(leaves) - 1}
    for kind, typ in _SCALAR_KINDS:
        if isinstance(tree, typ):
            return {"kind": kind, "value": float(tree).hex() if kind == "float" else typ(tree)}
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        cls = type(tree)
        fields = list(getattr(cls, "_fields"))  # noqa: B009 - a NamedTuple, not known to the type checker
        items = [_flatten(v, f"{path}.{f}", leaves) for f, v in zip(fields, tree, strict=True)]
        return {"kind": "namedtuple", "type": f"{cls.__module__}:{cls.__qualname__}", "fields": fields, "items": items}
    if isinstance(tree, tuple | list):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return {"kind": kind, "items": [_flatten(v, f"{path}[{i}]", leaves) for i, v in enumerate(tree)]}
    if isinstance(tree, Mapping):
        return _flatten_dict(tree, path, leaves)
    msg = (
        f"cannot checkpoint a {type(tree).__module__}.{type(tree).__qualname__} at {path or 'the root'}: "
        "leaves must be arrays, bool, int, float, str or None, inside NamedTuples, tuples, lists or dicts"
    )
    raise TypeError(msg)


def _flatten_dict(tree: Mapping[Any, Any], path: str, leaves: list[tuple[str, Array]]) -> dict[str, Any]:
    keys, items = [], []
    for k, v in tree.items():
        if isinstance(k, bool) or not isinstance(k, str | int):
            msg = f"dict keys must be str or int, got {type(k).__name__} at {path or 'the root'}"
            raise TypeError(msg)
        keys.append(["str" if isinstance(k, str) else "int", k])
        items.append(_flatten(v, f"{path}[{k!r}]", leaves))
    return {"kind": "dict", "keys": keys, "items": items}


def _json_safe(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        msg = f"{where} must be JSON-serialisable (finite numbers, str, lists, dicts): {err}"
        raise TypeError(msg) from err


def save_checkpoint(path: str | os.PathLike[str], tree: Any, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``tree`` to ``path`` atomically, in the versioned ``.npz`` format of this module.

    Parameters
    ----------
    path : str or path-like
        Destination file (conventionally ``*.npz``; the name is used as given).
        Its directory must exist. An existing file is replaced atomically.
    tree : GingerState, QNGState or pytree
        NamedTuples, tuples, lists and dicts (``str`` or ``int`` keys) of
        arrays of any supported backend, Python scalars and ``None``.
    metadata : mapping, optional
        JSON-serialisable information stored in the manifest (epoch, step,
        configuration, ...); read it back with :func:`read_checkpoint_manifest`.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    TypeError
        If the tree holds something that cannot be stored (an unsupported
        container or leaf, a non-str/int dict key, a traced JAX value) or the
        metadata is not JSON-serialisable.
    """
    path = Path(path)
    leaves: list[tuple[str, Array]] = []
    node = _flatten(tree, "", leaves)
    meta = dict(metadata) if metadata is not None else {}
    _json_safe(meta, "metadata")
    arrays: dict[str, np.ndarray] = {}
    records = []
    backends: list[str] = []
    for i, (leaf_path, leaf) in enumerate(leaves):
        if is_traced(leaf):
            msg = f"cannot checkpoint a traced JAX value at {leaf_path or 'the root'} (save outside jax.jit)"
            raise TypeError(msg)
        host, name = to_host_exact(leaf)
        host = np.asarray(host, order="C")
        key = f"leaf_{i:05d}"
        arrays[key] = host
        backend = backend_name(array_namespace(leaf))
        if backend not in backends:
            backends.append(backend)
        records.append(
            {
                "key": key,
                "path": leaf_path,
                "backend": backend,
                "device": str(device_of(leaf)),
                "dtype": name,
                "shape": list(host.shape),
                "sha256": hashlib.sha256(host.tobytes()).hexdigest(),
                "numpy_scalar": isinstance(leaf, np.generic),
            }
        )
    from lowrank_ggn._version import __version__

    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "library_version": __version__,
        "backends": backends,
        "tree": node,
        "leaves": records,
        "metadata": meta,
    }
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    _write_atomically(path, arrays)
    return path


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    directory = path.parent if str(path.parent) else Path()
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------- decoding


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify the manifest and every member; raise CheckpointError on any problem."""
    path = Path(path)
    if not path.is_file():
        msg = f"no checkpoint file at {path}"
        raise FileNotFoundError(msg)
    try:
        # Open the file here: np.load(path) leaks its handle when the zip is unreadable.
        with path.open("rb") as f, np.load(f, allow_pickle=False) as npz:
            manifest, data = _members(path, npz)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, RuntimeError) as err:
        msg = f"{path} is not a readable checkpoint (truncated or corrupted?): {err}"
        raise CheckpointError(msg) from err
    for record in manifest["leaves"]:
        _verify_leaf(path, record, data[record["key"]])
    return manifest, data


def _members(path: Path, npz: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    names = set(npz.files)
    if _MANIFEST not in names:
        msg = f"{path} is an .npz file but not a lowrank_ggn checkpoint (no {_MANIFEST})"
        raise CheckpointError(msg)
    manifest = _parse_manifest(path, npz[_MANIFEST])
    expected = {r["key"] for r in manifest["leaves"]} | {_MANIFEST}
    if names != expected:
        msg = f"{path}: members {sorted(names ^ expected)} do not match the manifest"
        raise CheckpointError(msg)
    return manifest, {r["key"]: npz[r["key"]] for r in manifest["leaves"]}


def _parse_manifest(path: Path, raw: np.ndarray) -> dict[str, Any]:
    try:
        manifest = json.loads(bytes(np.asarray(raw, dtype=np.uint8)).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        msg = f"{path}: the manifest is not valid JSON: {err}"
        raise CheckpointError(msg) from err
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        msg = f"{path} is not a {CHECKPOINT_FORMAT} file"
        raise CheckpointError(msg)
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        msg = f"{path}: invalid format version {version!r}"
        raise CheckpointError(msg)
    if version > CHECKPOINT_VERSION:
        msg = (
            f"{path} has format version {version}, newer than the {CHECKPOINT_VERSION} this library reads; "
            "upgrade lowrank_ggn"
        )
        raise CheckpointError(msg)
    for field in ("tree", "leaves", "metadata"):
        if field not in manifest:
            msg = f"{path}: the manifest has no {field!r}"
            raise CheckpointError(msg)
    if not isinstance(manifest["leaves"], list) or not all(
        isinstance(r, dict) and {"key", "path", "backend", "dtype", "shape", "sha256"} <= r.keys()
        for r in manifest["leaves"]
    ):
        msg = f"{path}: malformed leaf records in the manifest"
        raise CheckpointError(msg)
    return manifest


def _verify_leaf(path: Path, record: dict[str, Any], host: np.ndarray) -> None:
    where = f"{path}: leaf {record['path'] or '<root>'} ({record['key']})"
    stored = "uint16" if record["dtype"] == "bfloat16" else record["dtype"]
    if dtype_name(host.dtype) != stored:
        msg = f"{where} has dtype {host.dtype}, the manifest says {record['dtype']}"
        raise CheckpointError(msg)
    if list(host.shape) != list(record["shape"]):
        msg = f"{where} has shape {tuple(host.shape)}, the manifest says {tuple(record['shape'])}"
        raise CheckpointError(msg)
    if hashlib.sha256(np.asarray(host, order="C").tobytes()).hexdigest() != record["sha256"]:
        msg = f"{where} is corrupted (its SHA-256 digest does not match the manifest)"
        raise CheckpointError(msg)


def read_checkpoint_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and verify a checkpoint, and return its manifest (format, version, tree, leaves, metadata).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    dict
        The manifest's JSON, after every stored array was checked against
        its SHA-256 digest (the format is described in the module docstring).

    Raises
    ------
    CheckpointError
        If the file is truncated, corrupted, not a checkpoint, or of a later
        format version.
    FileNotFoundError
        If there is no such file.
    """
    manifest, _ = _read(path)
    return manifest


def _resolve_type(spec: str, fields: list[str]) -> type:
    """Find a NamedTuple class by ``module:QualName`` among imported modules (lowrank_ggn's are imported)."""
    module_name, _, qualname = spec.partition(":")
    module = sys.modules.get(module_name)
    if module is None and (module_name == "lowrank_ggn" or module_name.startswith("lowrank_ggn.")):
        module = importlib.import_module(module_name)
    if module is None:
        msg = (
            f"the checkpoint holds a {spec} but module {module_name!r} is not imported; "
            "import it first or pass like= (a template of the same structure)"
        )
        raise CheckpointError(msg)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, tuple) and list(getattr(obj, "_fields", ())) == fields):
        msg = f"{spec} is not a NamedTuple with fields {fields} in this environment; pass like="
        raise CheckpointError(msg)
    return obj


def _check_like(node: dict[str, Any], like: Any, path: str, records: list[dict[str, Any]], out: list[Any]) -> None:
    """Check that the template ``like`` has the stored structure; collect its array leaves in ``out``."""
    kind = node["kind"]
    if kind == "array":
        _check_like_array(node, like, path, records)
        out.append(like)
        return
    if kind in ("none", "bool", "int", "float", "str"):
        return  # scalars come from the file
    children = _like_children(node, like, path)
    for (sub_path, child), sub in zip(children, _children_of(like, node), strict=True):
        _check_like(child, sub, sub_path, records, out)


def _check_like_array(node: dict[str, Any], like: Any, path: str, records: list[dict[str, Any]]) -> None:
    if not is_array(like):
        msg = f"checkpoint has an array at {path or 'the root'}, like has a {type(like).__name__}"
        raise CheckpointError(msg)
    record = records[node["leaf"]]
    if list(like.shape) != list(record["shape"]):
        msg = f"shape mismatch at {path or 'the root'}: checkpoint {tuple(record['shape'])}, like {tuple(like.shape)}"
        raise CheckpointError(msg)


def _like_children(node: dict[str, Any], like: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Return the (path, node) pairs of a container node, after checking that ``like`` is the same container."""
    kind, items = node["kind"], node["items"]
    if kind == "namedtuple":
        ok = isinstance(like, tuple) and list(getattr(type(like), "_fields", ())) == node["fields"]
        paths = [f"{path}.{f}" for f in node["fields"]]
        what = f"a {node['type']}"
    elif kind == "dict":
        keys = [k for _, k in node["keys"]]
        # Key order is not structure (JAX sorts dict keys when it rebuilds a pytree); children go by key.
        ok = isinstance(like, Mapping) and len(like) == len(keys) and all(k in like for k in keys)
        paths = [f"{path}[{k!r}]" for k in keys]
        what = f"a dict with keys {keys}"
    else:
        ok = isinstance(like, tuple | list) and not hasattr(type(like), "_fields") and len(like) == len(items)
        paths = [f"{path}[{i}]" for i in range(len(items))]
        what = f"a {kind} of length {len(items)}"
    if not ok:
        like_what = f"a {type(like).__name__}"
        if isinstance(like, Mapping):
            like_what += f" with keys {list(like.keys())}"
        msg = f"structure mismatch at {path or 'the root'}: checkpoint has {what}, like has {like_what}"
        raise CheckpointError(msg)
    return list(zip(paths, items, strict=True))


def _children_of(like: Any, node: dict[str, Any]) -> list[Any]:
    if node["kind"] == "dict":
        return [like[k] for _, k in node["keys"]]
    return list(like)


def _build(node: dict[str, Any], arrays: list[Any]) -> Any:
    kind = node["kind"]
    if kind == "array":
        return arrays[node["leaf"]]
    if kind in ("none", "bool", "int", "float", "str"):
        return None if kind == "none" else float.fromhex(node["value"]) if kind == "float" else node["value"]
    items = [_build(child, arrays) for child in node["items"]]
    if kind == "dict":
        return {k: v for (_, k), v in zip(node["keys"], items, strict=True)}
    if kind == "namedtuple":
        return _resolve_type(node["type"], node["fields"])(*items)
    return tuple(items) if kind == "tuple" else items


_KEY_TYPES = {"str": str, "int": int}
_VALUE_TYPES = {"bool": bool, "int": int, "str": str}


def _check_tree(node: Any, n_leaves: int, types: list[tuple[str, list[str]]]) -> None:
    """Validate the JSON tree (kinds, indices, key types); collect the NamedTuple types to resolve."""
    kind = node.get("kind") if isinstance(node, dict) else None
    if kind in ("tuple", "list", "dict", "namedtuple"):
        ok = isinstance(node.get("items"), list) and _container_ok(node, kind)
        if ok and kind == "namedtuple":
            types.append((node["type"], node["fields"]))
        if ok:
            for child in node["items"]:
                _check_tree(child, n_leaves, types)
    else:
        ok = _leaf_ok(node, kind, n_leaves)
    if not ok:
        msg = f"malformed {kind!r} node in the manifest"
        raise CheckpointError(msg)


def _leaf_ok(node: Any, kind: Any, n_leaves: int) -> bool:
    if kind == "none":
        return True
    if kind == "array":
        leaf = node.get("leaf")
        return isinstance(leaf, int) and not isinstance(leaf, bool) and 0 <= leaf < n_leaves
    if kind == "float":
        try:
            float.fromhex(node.get("value"))
        except (TypeError, ValueError):
            return False
        return True
    return kind in _VALUE_TYPES and isinstance(node.get("value"), _VALUE_TYPES[kind])


def _container_ok(node: dict[str, Any], kind: str) -> bool:
    n = len(node["items"])
    if kind == "dict":
        keys = node.get("keys")
        return (
            isinstance(keys, list)
            and len(keys) == n
            and all(isinstance(k, list) and len(k) == 2 and isinstance(k[1], _KEY_TYPES.get(k[0], ())) for k in keys)
        )
    if kind == "namedtuple":
        fields = node.get("fields")
        return isinstance(node.get("type"), str) and isinstance(fields, list) and len(fields) == n
    return True


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    like: Any = None,
    xp: Any | None = None,
    device: Device | None = None,
    dtype: DType | None = None,
) -> Any:
    """Read a checkpoint written by :func:`save_checkpoint` and rebuild the tree.

    Every array is restored with the bits it was saved with, then (only if
    ``dtype`` is given) its floating leaves are converted.

    Parameters
    ----------
    path : str or path-like
        The checkpoint file.
    like : pytree, optional
        A template with the saved structure (a freshly initialised state, an
        optimiser state): NamedTuple types, tuple/list lengths, dict keys and
        array shapes must match, and each array is restored onto the
        namespace and device of the template's array in its place; the
        template's array dtypes must match the file's unless ``dtype`` is
        given. Scalars come from the file. Without ``like``, NamedTuple types
        are looked up among the imported modules (``lowrank_ggn``'s own
        always resolve).
    xp : module, optional
        Namespace for every array (overrides the recorded backends and
        ``like``'s). Default: each array's recorded backend.
    device : device, optional
        Device for every array. Default: ``like``'s devices, else the
        namespace's default device.
    dtype : dtype, optional
        Convert every real floating array to this dtype (of the target
        namespace) after restoring it exactly.

    Returns
    -------
    pytree
        A new tree; nothing is shared with the file or ``like``.

    Raises
    ------
    CheckpointError
        If the file is truncated, corrupted (digest mismatch), not a
        checkpoint, of a later format version, malformed, or does not match
        ``like``. Nothing is returned in that case.
    FileNotFoundError
        If there is no such file.
    TypeError
        If an array cannot be represented on the target (e.g. float64 on JAX
        without ``jax_enable_x64``, bfloat16 on a namespace without it).
    """
    manifest, data = _read(path)
    records = manifest["leaves"]
    types: list[tuple[str, list[str]]] = []
    _check_tree(manifest["tree"], len(records), types)
    like_leaves: list[Any] = []
    if like is not None:
        _check_like(manifest["tree"], like, "", records, like_leaves)
        if dtype is None:
            for record, leaf in zip(records, like_leaves, strict=True):
                if dtype_name(leaf.dtype) != record["dtype"]:
                    msg = (
                        f"dtype mismatch at {record['path'] or 'the root'}: checkpoint {record['dtype']}, "
                        f"like {dtype_name(leaf.dtype)} (pass dtype= to convert)"
                    )
                    raise CheckpointError(msg)
    else:
        for spec, fields in types:
            _resolve_type(spec, fields)
    target_xp = resolve_namespace(xp) if xp is not None else None
    arrays = []
    for i, record in enumerate(records):
        if target_xp is not None:
            ns, dev = target_xp, device
        elif like is not None:
            ns = array_namespace(like_leaves[i])
            dev = device if device is not None else device_of(like_leaves[i])
        else:
            try:
                ns = namespace_by_name(record["backend"], float64=False)
            except (ImportError, ValueError) as err:
                msg = f"cannot restore {record['path'] or 'the root'} on backend {record['backend']!r}: {err}; pass xp="
                raise CheckpointError(msg) from err
            dev = device
        arrays.append(_restore_leaf(ns, data[record["key"]], record, dev, dtype))
    return _build(manifest["tree"], arrays)


def _restore_leaf(ns: ArrayNamespace, host: np.ndarray, record: dict[str, Any], device: Any, dtype: Any) -> Array:
    out = from_host_exact(ns, host, record["dtype"], device=device)
    if dtype is not None and is_real_floating(ns, out.dtype) and out.dtype != dtype:
        out = ns.astype(out, dtype)
    if record.get("numpy_scalar") and isinstance(out, np.ndarray) and out.ndim == 0:
        out = out[()]  # NumPy arithmetic on 0-d arrays gives scalars; give back what was saved
    return out
