r"""Checkpoints: save and restore states (and any pytree of arrays) to a versioned ``.npz`` file.

:func:`save_checkpoint` writes a :class:`~lowrank_ggn.GingerState`, a
:class:`~lowrank_ggn.QNGState`, or any nesting of NamedTuples, tuples,
lists and dicts (``str`` or ``int`` keys) whose leaves are arrays of a
supported backend, Python scalars (``bool``, ``int``, ``float``, ``str``),
dtypes (NumPy, PyTorch, JAX, array_api_strict) or ``None`` — which covers
optax optimiser states and ``torch.optim`` state dicts. :func:`load_checkpoint`
restores it bit for bit, on the backend it came from or on a requested
namespace, device (JAX: sharding) and dtype.

File format (version 2)
-----------------------
An uncompressed NumPy ``.npz`` archive (a zip file whose members are all
stored, not deflated, each CRC-32 checked) holding

* ``leaf_00000.npy``, ``leaf_00001.npy``, …: one ``.npy`` member per array
  leaf, in depth-first order, with the exact bits of the array (``bfloat16``
  as its ``uint16`` bit pattern);
* ``__manifest__.npy``: a ``uint8`` array holding UTF-8 JSON::

      {"format": "lowrank_ggn.checkpoint", "version": 2,
       "library_version": "0.1.0", "backends": ["jax"],
       "tree": <node>, "leaves": [<leaf>, ...], "metadata": {...},
       "manifest_sha256": "<64 hex digits>"}

  where a ``<leaf>`` is ``{"key", "path", "backend", "device", "dtype",
  "shape", "sha256", "numpy_scalar"}`` (``path`` names the leaf in the tree,
  e.g. ``.basis`` or ``['state'][0]['exp_avg']``; ``sha256`` is the digest of
  the stored bytes; ``numpy_scalar`` marks a NumPy scalar such as
  ``np.int32(3)``, restored as one on NumPy) and a ``<node>`` is one of
  ``{"kind": "array", "leaf": i}``, ``{"kind": "none"}``,
  ``{"kind": "bool" | "int" | "str", "value": v}``,
  ``{"kind": "float", "value": float.hex(v)}``,
  ``{"kind": "dtype", "backend": "numpy" | "torch" | "jax" | "array_api_strict",
  "name": "float64", "form": "dtype" | "type"}`` (``"type"`` for a NumPy
  scalar type such as ``np.float64``),
  ``{"kind": "tuple" | "list", "items": [...]}``,
  ``{"kind": "dict", "keys": [["str" | "int", k], ...], "items": [...]}`` or
  ``{"kind": "namedtuple", "type": "module:QualName", "fields": [...],
  "items": [...]}`` (types exported by ``lowrank_ggn`` are named
  ``lowrank_ggn:GingerState``, independent of the module defining them).
  ``manifest_sha256`` is the SHA-256 digest of the canonical JSON
  (``sort_keys=True``, separators ``","`` and ``":"``, ASCII) of every other
  field of the manifest.

Version 1 (the first release) is version 2 without ``manifest_sha256`` and
without dtype nodes; it is still read, with every check below but the
manifest digest.

What loading checks
-------------------
Everything is read and verified before any array is built, and the first
problem raises :class:`CheckpointError`; a truncated, corrupted, edited or
mismatched file never yields a partial state.

* Every member must be stored uncompressed and unencrypted, and its size must
  be what the manifest's shape and dtype for it imply; this is checked from
  the zip directory before any leaf is read, so reading a damaged or hostile
  file costs no more memory than the file's own size.
* Format, version, the manifest digest (version 2), the tree (well formed,
  every leaf referenced exactly once and at the path its record names), each
  leaf's dtype, shape and SHA-256 digest, and the structure of ``like``.
* The floating arrays of a :class:`~lowrank_ggn.GingerState`,
  :class:`~lowrank_ggn.QNGState` or :class:`~lowrank_ggn.GingerProductState`
  (one whose fields are all arrays) must be finite: such a state is finite
  after every accepted update, and a non-finite one would poison every later
  step. Other leaves (optimiser bookkeeping, user data) may hold NaN or inf
  and are restored as they are.

The manifest digest detects accidental and naive edits (a hand-edited
hyper-parameter, shape or type); it is not a signature — whoever edits the
manifest can recompute it — so it does not authenticate a file from an
untrusted source.

Writing
-------
:func:`save_checkpoint` writes to a temporary file in the target's directory,
named ``.<name>.<pid>.<host>.<random>.lowrank_ggn-tmp``, flushes it to disk and
renames it over the target, so a crash leaves either the old file or the new
one. Any exception during the write (``KeyboardInterrupt`` included) removes
the temporary file; a process killed mid-write (``SIGKILL``, power loss)
leaves it behind, and the next save to the same target from the same host
removes such leftovers of processes that are no longer running (POSIX). A new
file gets the permissions ``open()`` would give it (``0o666`` less the
umask); an existing file keeps its permission bits. A symbolic link is
written through, as ``open()`` would: its target is replaced, the link stays.

Optimiser states
----------------
An optimiser front-end needs nothing more: its state is a pytree.

* optax: ``save_checkpoint(path, opt_state)``; restore with
  ``load_checkpoint(path, like=tx.init(params))`` (the template gives the
  NamedTuple types, the namespace and the device or sharding; without
  ``like`` the types are found when their modules are imported).
* ``torch.optim``: ``save_checkpoint(path, {"model": model.state_dict(),
  "optimizer": optimizer.state_dict()})`` and
  ``optimizer.load_state_dict(load_checkpoint(path, device=...)["optimizer"])``
  (integer parameter ids, hyper-parameters and dtypes such as
  ``state_dtype=torch.float64`` are stored as they are).
* A callable (a damping or learning-rate schedule given as a function) is
  code, not data, and cannot be stored: saving it is a ``TypeError`` naming
  its path, and no file is written. Take it out before saving and give the
  rebuilt optimiser's back before loading::

      state = optimizer.state_dict()
      for group in state["param_groups"]:
          del group["damping"]
      save_checkpoint(path, {"optimizer": state})
      ...
      state = load_checkpoint(path)["optimizer"]
      for group, live in zip(state["param_groups"], optimizer.param_groups):
          group["damping"] = live["damping"]
      optimizer.load_state_dict(state)

* A front-end that keeps a :class:`~lowrank_ggn.GingerState` or
  :class:`~lowrank_ggn.QNGState` inside its own NamedTuple state is covered
  the same way; define the NamedTuple at module level so that its
  ``module:QualName`` can be found again.

JAX sharding: a sharded array is gathered to the host when saved. On loading,
each leaf goes where ``like``'s leaf in its place is (a ``jax.Array`` or a
``jax.ShapeDtypeStruct`` with a ``sharding``), so a state saved on one mesh
loads onto another mesh or onto one device; without ``like`` it goes to
``device`` or the default device.

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
import math
import os
import re
import secrets
import socket
import stat
import struct
import sys
import threading
import zipfile
from collections import Counter
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
CHECKPOINT_VERSION = 2
"""The format version written by this library; versions 1 and 2 are read, later ones are refused."""

_MANIFEST = "__manifest__"
_DIGEST = "manifest_sha256"
_TMP_SUFFIX = ".lowrank_ggn-tmp"
_NPY_HEADER_MAX = 10_000  # numpy.lib.format's default limit on the header it parses
_NPY_PREFIX_MAX = 12  # magic, version and header length (.npy format 2.0)
_READ_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupted, edited, of an unknown format or version, or does not match."""


# --------------------------------------------------------------------------- dtypes as leaves


_DTYPE_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
)
_DTYPE_MODULES = {"torch": "torch", "jax": "jax.numpy", "array_api_strict": "array_api_strict"}


def _numpy_dtype(name: str) -> np.dtype[Any]:
    """Return the NumPy dtype called ``name`` (``bfloat16`` from ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _dtype_node(x: Any) -> dict[str, Any] | None:
    """Describe a dtype of NumPy, PyTorch, JAX or array_api_strict as a node; ``None`` if ``x`` is not one."""
    if isinstance(x, np.dtype) or (isinstance(x, type) and issubclass(x, np.generic)):
        try:
            dt = np.dtype(x)
        except TypeError:  # an abstract type such as np.floating
            return None
        name = dtype_name(dt)
        if name not in _DTYPE_NAMES or _numpy_dtype(name) != dt:
            return None
        return {"kind": "dtype", "backend": "numpy", "name": name, "form": "type" if isinstance(x, type) else "dtype"}
    for backend, module_name in _DTYPE_MODULES.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in _DTYPE_NAMES:
            if getattr(module, name, None) is x:
                return {"kind": "dtype", "backend": backend, "name": name, "form": "dtype"}
    return None


def _load_dtype(node: dict[str, Any]) -> Any:
    """Return the dtype a ``dtype`` node describes; CheckpointError if its library is missing."""
    backend, name = node["backend"], node["name"]
    try:
        if backend == "numpy":
            dt = _numpy_dtype(name)
            return dt.type if node["form"] == "type" else dt
        module = importlib.import_module(_DTYPE_MODULES[backend])
    except ImportError as err:
        msg = f"cannot restore the {backend} dtype {name}: {err}"
        raise CheckpointError(msg) from err
    dtype = getattr(module, name, None)
    if dtype is None:
        msg = f"{_DTYPE_MODULES[backend]} has no dtype {name} in this environment"
        raise CheckpointError(msg)
    return dtype


# --------------------------------------------------------------------------- encoding


_SCALAR_KINDS = (("bool", bool), ("int", int), ("float", float), ("str", str))  # bool before int


def _type_spec(cls: type) -> str:
    """``module:QualName`` of a NamedTuple class; ``lowrank_ggn:Name`` for a type the package exports."""
    if cls.__module__.startswith("lowrank_ggn."):
        import lowrank_ggn

        if getattr(lowrank_ggn, cls.__qualname__, None) is cls:
            return f"lowrank_ggn:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"


def _flatten(tree: Any, path: str, leaves: list[tuple[str, Array]]) -> dict[str, Any]:
    """Describe ``tree`` as a JSON node; append its array leaves to ``leaves``."""
    if tree is None or isinstance(tree, type):  # before is_array: NumPy's scalar types have __array_namespace__
        return _flatten_other(tree, path, leaves)
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
        return {"kind": "namedtuple", "type": _type_spec(cls), "fields": fields, "items": items}
    if isinstance(tree, tuple | list):
        kind = "tuple" if isinstance(tree, tuple) else "list"
        return {"kind": kind, "items": [_flatten(v, f"{path}[{i}]", leaves) for i, v in enumerate(tree)]}
    return _flatten_other(tree, path, leaves)


def _flatten_other(tree: Any, path: str, leaves: list[tuple[str, Array]]) -> dict[str, Any]:
    """Describe None, a dict or a dtype; raise TypeError for anything else (a callable, an unknown object)."""
    if tree is None:
        return {"kind": "none"}
    if isinstance(tree, Mapping):
        return _flatten_dict(tree, path, leaves)
    node = _dtype_node(tree)
    if node is not None:
        return node
    if callable(tree):
        name = getattr(tree, "__qualname__", type(tree).__qualname__)
        what = "class" if isinstance(tree, type) else "callable"
        msg = (
            f"cannot checkpoint the {what} {name} at {path or 'the root'}: code is not data; "
            "remove it before saving (e.g. a damping or learning-rate schedule in an optimiser's "
            "param_groups) and set it again after loading, or save the numbers it is built from"
        )
        raise TypeError(msg)
    msg = (
        f"cannot checkpoint a {type(tree).__module__}.{type(tree).__qualname__} at {path or 'the root'}: "
        "leaves must be arrays, bool, int, float, str, dtypes or None, inside NamedTuples, tuples, lists or dicts"
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


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of every field of ``manifest`` but the digest itself."""
    body = {k: v for k, v in manifest.items() if k != _DIGEST}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def save_checkpoint(path: str | os.PathLike[str], tree: Any, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``tree`` to ``path`` atomically, in the versioned ``.npz`` format of this module.

    Parameters
    ----------
    path : str or path-like
        Destination file (conventionally ``*.npz``; the name is used as given).
        Its directory must exist. An existing file is replaced atomically and
        keeps its permission bits; a new file gets ``0o666`` less the umask,
        as with ``open()``. A symbolic link is written through (its target is
        replaced; the link stays).
    tree : GingerState, QNGState or pytree
        NamedTuples, tuples, lists and dicts (``str`` or ``int`` keys) of
        arrays of any supported backend, Python scalars, dtypes (NumPy,
        PyTorch, JAX, array_api_strict) and ``None``. A sharded JAX array is
        gathered to the host.
    metadata : mapping, optional
        JSON-serialisable information stored in the manifest (epoch, step,
        configuration, ...); read it back with :func:`read_checkpoint_manifest`.

    Returns
    -------
    pathlib.Path
        The path written (as given, even if it is a symbolic link).

    Raises
    ------
    TypeError
        If the tree holds something that cannot be stored (an unsupported
        container or leaf, a callable such as a schedule, a non-str/int dict
        key, a traced JAX value) or the metadata is not JSON-serialisable;
        the message names the leaf's path, and no file is written.
    OSError
        If the file cannot be written; the previous file, if any, is intact
        and the temporary file is removed.

    Notes
    -----
    The data are written to ``.<name>.<pid>.<host>.<random>.lowrank_ggn-tmp``
    in the target's directory, flushed to disk and renamed over the target.
    Such files left by processes on this host that no longer run (killed
    mid-write) are removed by the next save to the same target (POSIX only).
    Time and memory are linear in the total size of the arrays.
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

    manifest: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "library_version": __version__,
        "backends": backends,
        "tree": node,
        "leaves": records,
        "metadata": meta,
    }
    manifest[_DIGEST] = _manifest_digest(manifest)
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    _write_atomically(path, arrays)
    return path


# --------------------------------------------------------------------------- atomic writes

_IN_FLIGHT: set[str] = set()  # temporary files this process is writing now (any thread)
_IN_FLIGHT_LOCK = threading.Lock()


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # POSIX only: on Windows signal 0 is CTRL_C_EVENT
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True  # exists but not ours, or not a pid we can judge: leave its file alone
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporary files of ``target`` left on this host by processes that no longer run."""
    if os.name != "posix":
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.([0-9a-f]{{8}})\.[0-9a-f]{{16}}{re.escape(_TMP_SUFFIX)}")
    host = _host_tag()
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or match.group(2) != host:
            continue
        pid, leftover = int(match.group(1)), target.parent / entry.name
        if pid == os.getpid():
            with _IN_FLIGHT_LOCK:
                if str(leftover) in _IN_FLIGHT:
                    continue  # another thread of this process is writing it
        elif _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                leftover.unlink()


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    target = Path(os.path.realpath(path))  # write through a symbolic link, as open() does
    directory = target.parent
    try:
        mode: int | None = stat.S_IMODE(target.stat().st_mode) & 0o777
    except FileNotFoundError:
        mode = None  # a new file: open()'s 0o666 less the umask, applied by os.open below
    _remove_stale_temporaries(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    prefix = f".{target.name}.{os.getpid()}.{_host_tag()}."
    tmp, created = directory, False
    try:
        while not created:
            tmp = directory / f"{prefix}{secrets.token_hex(8)}{_TMP_SUFFIX}"
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.add(str(tmp))
            try:
                fd = os.open(tmp, flags, 0o666)
                created = True
            except FileExistsError:
                with _IN_FLIGHT_LOCK:
                    _IN_FLIGHT.discard(str(tmp))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(target)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    finally:
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.discard(str(tmp))
    with contextlib.suppress(OSError, AttributeError):  # make the rename durable (POSIX)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --------------------------------------------------------------------------- reading and verifying


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and verify the manifest and every member; raise CheckpointError on any problem."""
    path = Path(path)
    if not path.is_file():
        msg = f"no checkpoint file at {path}"
        raise FileNotFoundError(msg)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            with zipfile.ZipFile(f) as archive:
                manifest, data = _members(path, archive, size)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, RuntimeError, struct.error) as err:
        msg = f"{path} is not a readable checkpoint (truncated or corrupted?): {err}"
        raise CheckpointError(msg) from err
    for record in manifest["leaves"]:
        _verify_leaf(path, record, data[record["key"]])
    _check_structure(path, manifest)
    return manifest, data


def _members(path: Path, archive: zipfile.ZipFile, size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Check the zip directory, then read the manifest, then check every member's size, then read them."""
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        msg = f"{path}: duplicate members {sorted(n for n, c in Counter(names).items() if c > 1)}"
        raise CheckpointError(msg)
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            msg = (
                f"{path}: member {info.filename} is compressed (zip method {info.compress_type}); checkpoints are "
                "stored uncompressed, so the file was not written by save_checkpoint and is not inflated"
            )
            raise CheckpointError(msg)
        if info.flag_bits & 0x1:
            msg = f"{path}: member {info.filename} is encrypted"
            raise CheckpointError(msg)
        if info.file_size != info.compress_size or info.header_offset + info.compress_size > size:
            msg = f"{path}: member {info.filename} claims {info.file_size} bytes, more than the file holds"
            raise CheckpointError(msg)
    by_name = {info.filename: info for info in infos}
    if f"{_MANIFEST}.npy" not in by_name:
        msg = f"{path} is an .npz file but not a lowrank_ggn checkpoint (no {_MANIFEST})"
        raise CheckpointError(msg)
    raw = _read_npy(path, archive, by_name[f"{_MANIFEST}.npy"], np.dtype(np.uint8), None)
    manifest = _parse_manifest(path, raw)
    records = manifest["leaves"]
    expected = {f"{r['key']}.npy" for r in records} | {f"{_MANIFEST}.npy"}
    if set(names) != expected:
        msg = f"{path}: members {sorted(set(names) ^ expected)} do not match the manifest"
        raise CheckpointError(msg)
    for record in records:  # every size before any leaf is read
        _check_member_size(path, record, by_name[f"{record['key']}.npy"])
    data = {
        r["key"]: _read_npy(path, archive, by_name[f"{r['key']}.npy"], _stored_dtype(r), r["shape"]) for r in records
    }
    return manifest, data


def _stored_dtype(record: dict[str, Any]) -> np.dtype[Any]:
    return np.dtype(np.uint16) if record["dtype"] == "bfloat16" else np.dtype(record["dtype"])


def _check_member_size(path: Path, record: dict[str, Any], info: zipfile.ZipInfo) -> None:
    nbytes = _stored_dtype(record).itemsize * math.prod(record["shape"])
    header = info.file_size - nbytes
    if not 10 <= header <= _NPY_PREFIX_MAX + _NPY_HEADER_MAX:  # 10: the .npy format 1.0 minimum
        msg = (
            f"{path}: member {info.filename} has {info.file_size} bytes, but the manifest's shape "
            f"{tuple(record['shape'])} and dtype {record['dtype']} make {nbytes} bytes of data"
        )
        raise CheckpointError(msg)


def _read_npy(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, dtype: np.dtype[Any], shape: list[int] | None
) -> np.ndarray:
    """Read one stored ``.npy`` member whose header must give ``dtype`` and ``shape`` (any 1-d shape if None)."""
    where = f"{path}: member {info.filename}"
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_NPY_HEADER_MAX)
        elif version == (2, 0):
            got_shape, fortran, got_dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_NPY_HEADER_MAX)
        else:
            msg = f"{where} has .npy format version {version}, expected 1.0 or 2.0"
            raise CheckpointError(msg)
        if got_dtype.hasobject or dtype_name(got_dtype) != dtype_name(dtype):
            msg = f"{where} has dtype {got_dtype}, the manifest says {dtype}"
            raise CheckpointError(msg)
        if (list(got_shape) != list(shape)) if shape is not None else len(got_shape) != 1:
            msg = f"{where} has shape {tuple(got_shape)}, the manifest says {tuple(shape or ())}"
            raise CheckpointError(msg)
        if fortran and len(got_shape) > 1:
            msg = f"{where} is stored in Fortran order; save_checkpoint writes C order"
            raise CheckpointError(msg)
        nbytes = got_dtype.itemsize * math.prod(got_shape)
        if info.file_size - f.tell() != nbytes:
            msg = f"{where} holds {info.file_size - f.tell()} bytes of data, its header says {nbytes}"
            raise CheckpointError(msg)
        out = np.empty(got_shape, dtype=got_dtype)
        view = memoryview(out.reshape(-1).view(np.uint8)) if nbytes else memoryview(b"")
        filled = 0
        while filled < nbytes:
            n = f.readinto(view[filled : filled + _READ_CHUNK])  # bounded: readinto reads a copy first
            if not n:
                msg = f"{where} is truncated"
                raise CheckpointError(msg)
            filled += n
        if f.read(1):  # also reaches the end, where zipfile checks the CRC-32
            msg = f"{where} has trailing bytes"
            raise CheckpointError(msg)
    return out


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
    if version >= 2:  # the version that introduced the digest
        try:
            ok = manifest.get(_DIGEST) == _manifest_digest(manifest)
        except (TypeError, ValueError):  # non-finite numbers parsed from the JSON
            ok = False
        if not ok:
            msg = f"{path}: the manifest was edited or damaged (its {_DIGEST} does not match its contents)"
            raise CheckpointError(msg)
    for field in ("tree", "leaves", "metadata"):
        if field not in manifest:
            msg = f"{path}: the manifest has no {field!r}"
            raise CheckpointError(msg)
    _check_records(path, manifest["leaves"])
    return manifest


def _check_records(path: Path, records: Any) -> None:
    def ok(r: Any) -> bool:
        if not (isinstance(r, dict) and {"key", "path", "backend", "dtype", "shape", "sha256"} <= r.keys()):
            return False
        if not all(isinstance(r[k], str) for k in ("key", "path", "backend", "dtype", "sha256")):
            return False
        shape = r["shape"]
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            return False
        try:
            dtype = _stored_dtype(r)
        except TypeError:
            return False
        return not dtype.hasobject and dtype.names is None and dtype.subdtype is None

    if not isinstance(records, list) or not all(ok(r) for r in records):
        msg = f"{path}: malformed leaf records in the manifest"
        raise CheckpointError(msg)
    keys = [r["key"] for r in records]
    if len(set(keys)) != len(keys) or f"{_MANIFEST}" in keys:
        msg = f"{path}: duplicate leaf keys in the manifest"
        raise CheckpointError(msg)


def _verify_leaf(path: Path, record: dict[str, Any], host: np.ndarray) -> None:
    where = f"{path}: leaf {record['path'] or '<root>'} ({record['key']})"
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
        The manifest's JSON, after the file passed every check of
        :func:`load_checkpoint` that does not build the tree (the zip
        directory, member sizes, the manifest digest, the tree's leaf
        references, every stored array against its SHA-256 digest; the
        format is described in the module docstring).

    Raises
    ------
    CheckpointError
        If the file is truncated, corrupted, edited, compressed, not a
        checkpoint, or of a later format version.
    FileNotFoundError
        If there is no such file.
    """
    manifest, _ = _read(path)
    return manifest


# --------------------------------------------------------------------------- the tree


_KEY_TYPES = {"str": str, "int": int}
_VALUE_TYPES = {"bool": bool, "int": int, "str": str}
_SCALAR_NODES = ("none", "bool", "int", "float", "str", "dtype")


def _check_structure(path: Path, manifest: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Validate the tree against the leaf records; return the NamedTuple types it names.

    Every node must be well formed, and every leaf record referenced by
    exactly one array node, at the path the record names.
    """
    records = manifest["leaves"]
    types: list[tuple[str, list[str]]] = []
    refs: list[tuple[int, str]] = []
    _check_tree(manifest["tree"], "", len(records), types, refs)
    counts = Counter(i for i, _ in refs)
    for i, where in refs:
        if counts[i] > 1:
            msg = (
                f"{path}: the manifest's tree uses leaf {records[i]['key']} {counts[i]} times (at {where or '<root>'})"
            )
            raise CheckpointError(msg)
        if records[i]["path"] != where:
            msg = (
                f"{path}: leaf {records[i]['key']} is at {where or '<root>'} in the tree, "
                f"its record says {records[i]['path'] or '<root>'}"
            )
            raise CheckpointError(msg)
    unused = [r["key"] for i, r in enumerate(records) if i not in counts]
    if unused:
        msg = f"{path}: leaves {unused} are not in the manifest's tree"
        raise CheckpointError(msg)
    return types


def _child_paths(node: dict[str, Any], path: str) -> list[str]:
    kind, n = node["kind"], len(node["items"])
    if kind == "namedtuple":
        return [f"{path}.{f}" for f in node["fields"]]
    if kind == "dict":
        return [f"{path}[{k!r}]" for _, k in node["keys"]]
    return [f"{path}[{i}]" for i in range(n)]


def _check_tree(
    node: Any, path: str, n_leaves: int, types: list[tuple[str, list[str]]], refs: list[tuple[int, str]]
) -> None:
    """Validate one JSON node and its children; collect NamedTuple types and (leaf, path) references."""
    kind = node.get("kind") if isinstance(node, dict) else None
    if kind in ("tuple", "list", "dict", "namedtuple"):
        ok = isinstance(node.get("items"), list) and _container_ok(node, kind)
        if ok:
            if kind == "namedtuple":
                types.append((node["type"], node["fields"]))
            for child, child_path in zip(node["items"], _child_paths(node, path), strict=True):
                _check_tree(child, child_path, n_leaves, types, refs)
    else:
        ok = _leaf_ok(node, kind, n_leaves)
        if ok and kind == "array":
            refs.append((node["leaf"], path))
    if not ok:
        msg = f"malformed {kind!r} node in the manifest at {path or '<root>'}"
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
    if kind == "dtype":
        backend, form = node.get("backend"), node.get("form")
        return (
            (backend == "numpy" or backend in _DTYPE_MODULES)
            and node.get("name") in _DTYPE_NAMES
            and (form == "dtype" or (form == "type" and backend == "numpy"))
        )
    return kind in _VALUE_TYPES and isinstance(node.get("value"), _VALUE_TYPES[kind])


def _container_ok(node: dict[str, Any], kind: str) -> bool:
    n = len(node["items"])
    if kind == "dict":
        keys = node.get("keys")
        return (
            isinstance(keys, list)
            and len(keys) == n
            and all(isinstance(k, list) and len(k) == 2 and type(k[1]) is _KEY_TYPES.get(k[0]) for k in keys)
            and len({(t, k) for t, k in keys}) == n
        )
    if kind == "namedtuple":
        fields = node.get("fields")
        return (
            isinstance(node.get("type"), str)
            and isinstance(fields, list)
            and len(fields) == n
            and all(isinstance(f, str) for f in fields)
        )
    return True


def _is_own_module(module_name: str) -> bool:
    return re.fullmatch(r"lowrank_ggn(\.[A-Za-z_]\w*)*", module_name) is not None


def _resolve_type(spec: str, fields: list[str]) -> type:
    """Find a NamedTuple class by ``module:QualName`` among imported modules (lowrank_ggn's are imported).

    A ``lowrank_ggn`` type whose module has moved is found by its public
    name ``lowrank_ggn.QualName``. Raises CheckpointError if there is no such
    NamedTuple with these fields.
    """
    module_name, _, qualname = spec.partition(":")
    own = _is_own_module(module_name)
    module = sys.modules.get(module_name)
    if module is None and own:
        with contextlib.suppress(ImportError):
            module = importlib.import_module(module_name)
    obj: Any = _named_tuple(module, qualname, fields) if module is not None else None
    if obj is None and own and "." not in qualname:
        import lowrank_ggn

        obj = _named_tuple(lowrank_ggn, qualname, fields)  # a public type whose defining module moved
    if obj is not None:
        return obj
    if module is None and not own:
        msg = (
            f"the checkpoint holds a {spec} but module {module_name!r} is not imported; "
            "import it first or pass like= (a template of the same structure)"
        )
        raise CheckpointError(msg)
    msg = f"{spec} is not a NamedTuple with fields {fields} in this environment; pass like="
    raise CheckpointError(msg)


def _named_tuple(module: Any, qualname: str, fields: list[str]) -> type | None:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    ok = isinstance(obj, type) and issubclass(obj, tuple) and list(getattr(obj, "_fields", ())) == fields
    return obj if ok else None


def _state_types() -> tuple[type, ...]:
    import lowrank_ggn

    names = ("GingerState", "QNGState", "GingerProductState")
    return tuple(t for t in (getattr(lowrank_ggn, n, None) for n in names) if isinstance(t, type))


def _check_states_finite(
    path: Path, node: dict[str, Any], records: list[dict[str, Any]], data: dict[str, np.ndarray]
) -> None:
    """Raise CheckpointError if a lowrank_ggn state (all fields arrays) holds a non-finite floating value."""
    kind = node["kind"]
    if kind not in ("tuple", "list", "dict", "namedtuple"):
        return
    if (
        kind == "namedtuple"
        and _is_own_module(node["type"].partition(":")[0])
        and all(child["kind"] == "array" for child in node["items"])
        and _resolve_type(node["type"], node["fields"]) in _state_types()
    ):
        for child in node["items"]:
            record = records[child["leaf"]]
            host = data[record["key"]]
            if record["dtype"] == "bfloat16":
                finite = not np.any((host.view(np.uint16) & 0x7F80) == 0x7F80)
            else:
                finite = host.dtype.kind not in "fc" or bool(np.all(np.isfinite(host)))
            if not finite:
                msg = (
                    f"{path}: {record['path'] or '<root>'} of a {node['type'].partition(':')[2]} holds NaN or inf; "
                    "a state is finite after every accepted update, so this one would poison every later step"
                )
                raise CheckpointError(msg)
        return
    for child in node["items"]:
        _check_states_finite(path, child, records, data)


# --------------------------------------------------------------------------- like= templates


def _is_abstract_leaf(x: Any) -> bool:
    """Tell whether ``x`` is a ``jax.ShapeDtypeStruct`` (shape, dtype and optional sharding, no data)."""
    cls = type(x)
    return cls.__name__ == "ShapeDtypeStruct" and cls.__module__.startswith("jax")


def _check_like(node: dict[str, Any], like: Any, path: str, records: list[dict[str, Any]], out: list[Any]) -> None:
    """Check that the template ``like`` has the stored structure; collect its array leaves in ``out``."""
    kind = node["kind"]
    if kind == "array":
        _check_like_array(node, like, path, records)
        out.append(like)
        return
    if kind in _SCALAR_NODES:
        return  # scalars and dtypes come from the file
    children = _like_children(node, like, path)
    for (sub_path, child), sub in zip(children, _children_of(like, node), strict=True):
        _check_like(child, sub, sub_path, records, out)


def _check_like_array(node: dict[str, Any], like: Any, path: str, records: list[dict[str, Any]]) -> None:
    if not (is_array(like) or _is_abstract_leaf(like)):
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
        what = f"a {node['type']}"
    elif kind == "dict":
        keys = [k for _, k in node["keys"]]
        # Key order is not structure (JAX sorts dict keys when it rebuilds a pytree); children go by key.
        ok = isinstance(like, Mapping) and len(like) == len(keys) and all(k in like for k in keys)
        what = f"a dict with keys {keys}"
    else:
        ok = isinstance(like, tuple | list) and not hasattr(type(like), "_fields") and len(like) == len(items)
        what = f"a {kind} of length {len(items)}"
    if not ok:
        like_what = f"a {type(like).__name__}"
        if isinstance(like, Mapping):
            like_what += f" with keys {list(like.keys())}"
        msg = f"structure mismatch at {path or 'the root'}: checkpoint has {what}, like has {like_what}"
        raise CheckpointError(msg)
    return list(zip(_child_paths(node, path), items, strict=True))


def _children_of(like: Any, node: dict[str, Any]) -> list[Any]:
    if node["kind"] == "dict":
        return [like[k] for _, k in node["keys"]]
    return list(like)


def _like_placement(leaf: Any) -> tuple[ArrayNamespace, Any]:
    """Namespace and device (JAX: sharding) of a template leaf."""
    if _is_abstract_leaf(leaf):
        return namespace_by_name("jax", float64=False), getattr(leaf, "sharding", None)
    return array_namespace(leaf), device_of(leaf)


# --------------------------------------------------------------------------- loading


# State layouts that gained a field: {type spec: (current fields, (new field, copied from))}. A file saved
# before ``escaped`` existed (5-field GingerState, 7-field GingerProductState) loads with
# ``escaped = discarded``, which is what the current code would have computed: Ginger drops one eigenvalue
# per step, so the EMA of the dropped spectral norms equals the EMA of the dropped traces.
_UPGRADES: dict[str, tuple[list[str], tuple[str, str]]] = {
    "GingerState": (
        ["basis", "eigvals", "discarded", "escaped", "step", "num_nonfinite"],
        ("escaped", "discarded"),
    ),
    "GingerProductState": (
        ["columns", "coords", "count", "eigvals", "discarded", "escaped", "step", "num_nonfinite"],
        ("escaped", "discarded"),
    ),
}


def _upgrade_of(spec: str, fields: list[str]) -> tuple[list[str], tuple[str, str]] | None:
    """Return the upgrade of a lowrank_ggn type stored with an older field list, or None."""
    module_name, _, qualname = spec.partition(":")
    entry = _UPGRADES.get(qualname) if _is_own_module(module_name) else None
    if entry is None or fields != [f for f in entry[0] if f != entry[1][0]]:
        return None
    return entry


def _upgraded_fields(spec: str, fields: list[str]) -> list[str]:
    entry = _upgrade_of(spec, fields)
    return fields if entry is None else list(entry[0])


def _upgrade_layouts(manifest: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bring states saved with an older field layout (see ``_UPGRADES``) to the current one, in the manifest.

    The new field's node reuses the stored leaf it is copied from (a new
    record with the same member); leaves are then renumbered in tree order,
    the order ``like=`` templates are matched in. Returns the new records
    (the input when nothing was upgraded).
    """
    changed = False

    def visit(node: dict[str, Any]) -> None:
        nonlocal changed
        for child in node.get("items", ()):
            visit(child)
        entry = _upgrade_of(node["type"], node["fields"]) if node["kind"] == "namedtuple" else None
        if entry is None:
            return
        fields, (added, source) = entry
        items = dict(zip(node["fields"], node["items"], strict=True))
        if items[source]["kind"] != "array":
            return
        record = dict(records[items[source]["leaf"]])
        record["path"] = record["path"].rsplit(".", 1)[0] + f".{added}"
        records.append(record)
        items[added] = {"kind": "array", "leaf": len(records) - 1}
        node["fields"] = list(fields)
        node["items"] = [items[f] for f in fields]
        changed = True

    records = list(records)
    visit(manifest["tree"])
    if not changed:
        return records
    order: list[int] = []

    def renumber(node: dict[str, Any]) -> None:
        if node["kind"] == "array":
            order.append(node["leaf"])
            node["leaf"] = len(order) - 1
        for child in node.get("items", ()):
            renumber(child)

    renumber(manifest["tree"])
    return [records[i] for i in order]


def _build(node: dict[str, Any], arrays: list[Any]) -> Any:
    kind = node["kind"]
    if kind == "array":
        return arrays[node["leaf"]]
    if kind == "dtype":
        return _load_dtype(node)
    if kind in _SCALAR_NODES:
        return None if kind == "none" else float.fromhex(node["value"]) if kind == "float" else node["value"]
    items = [_build(child, arrays) for child in node["items"]]
    if kind == "dict":
        return {k: v for (_, k), v in zip(node["keys"], items, strict=True)}
    if kind == "namedtuple":
        return _resolve_type(node["type"], node["fields"])(*items)
    return tuple(items) if kind == "tuple" else items


def _dtype_nodes(node: dict[str, Any], out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if node["kind"] == "dtype":
        out.append(node)
    for child in node.get("items", ()):
        _dtype_nodes(child, out)
    return out


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
        namespace and device of the template's array in its place (JAX: its
        sharding, so a state saved on one mesh loads onto another; a
        ``jax.ShapeDtypeStruct`` with a ``sharding`` may stand for the
        array); the template's array dtypes must match the file's unless
        ``dtype`` is given. Scalars and dtypes come from the file. Without
        ``like``, NamedTuple types are looked up among the imported modules
        (``lowrank_ggn``'s own always resolve).
    xp : module, optional
        Namespace for every array (overrides the recorded backends and
        ``like``'s). Default: each array's recorded backend.
    device : device, optional
        Device (JAX: or sharding) for every array. Default: ``like``'s
        placements, else the namespace's default device (one device, whatever
        the sharding the arrays were saved with).
    dtype : dtype, optional
        Convert every real floating array to this dtype (of the target
        namespace) after restoring it exactly.

    Returns
    -------
    pytree
        A new tree; nothing is shared with the file or ``like``. Dtype
        leaves are the saving library's dtype objects (``torch.float64``
        stays a torch dtype whatever ``xp``).

    Raises
    ------
    CheckpointError
        If the file is truncated, corrupted (digest mismatch), compressed,
        edited (manifest digest mismatch, a leaf used twice or not at all),
        not a checkpoint, of a later format version, malformed, names a type
        or dtype that cannot be found, holds a non-finite GingerState,
        QNGState or GingerProductState, or does not match ``like``. Nothing
        is returned in that case, and no array is built.
    FileNotFoundError
        If there is no such file.
    TypeError
        If an array cannot be represented on the target (e.g. float64 on JAX
        without ``jax_enable_x64``, bfloat16 on a namespace without it).

    Notes
    -----
    Time and memory are linear in the file's size (every array is hashed
    once; the file is read once).
    """
    path = Path(path)
    manifest, data = _read(path)
    records = manifest["leaves"]
    types = _check_structure(path, manifest)
    records = _upgrade_layouts(manifest, records)
    types = [(spec, _upgraded_fields(spec, fields)) for spec, fields in types]
    _check_states_finite(path, manifest["tree"], records, data)
    for node in _dtype_nodes(manifest["tree"], []):
        _load_dtype(node)
    like_leaves: list[Any] = []
    if like is not None:
        _check_like(manifest["tree"], like, "", records, like_leaves)
        if dtype is None:
            _check_like_dtypes(records, like_leaves)
    else:
        for spec, fields in types:
            _resolve_type(spec, fields)
    target_xp = resolve_namespace(xp) if xp is not None else None
    arrays = []
    for i, record in enumerate(records):
        ns, dev = _placement(record, target_xp, like_leaves[i] if like is not None else None, device)
        arrays.append(_restore_leaf(ns, data[record["key"]], record, dev, dtype))
    return _build(manifest["tree"], arrays)


def _check_like_dtypes(records: list[dict[str, Any]], like_leaves: list[Any]) -> None:
    for record, leaf in zip(records, like_leaves, strict=True):
        if dtype_name(leaf.dtype) != record["dtype"]:
            msg = (
                f"dtype mismatch at {record['path'] or 'the root'}: checkpoint {record['dtype']}, "
                f"like {dtype_name(leaf.dtype)} (pass dtype= to convert)"
            )
            raise CheckpointError(msg)


def _placement(record: dict[str, Any], xp: Any, like_leaf: Any, device: Any) -> tuple[ArrayNamespace, Any]:
    """Namespace and device (or sharding) of one restored leaf: ``xp``, else ``like``'s, else the recorded backend."""
    if xp is not None:
        return xp, device
    if like_leaf is not None:
        ns, dev = _like_placement(like_leaf)
        return ns, device if device is not None else dev
    try:
        return namespace_by_name(record["backend"], float64=False), device
    except (ImportError, ValueError) as err:
        msg = f"cannot restore {record['path'] or 'the root'} on backend {record['backend']!r}: {err}; pass xp="
        raise CheckpointError(msg) from err


def _restore_leaf(ns: ArrayNamespace, host: np.ndarray, record: dict[str, Any], device: Any, dtype: Any) -> Array:
    out = from_host_exact(ns, host, record["dtype"], device=device)
    if dtype is not None and is_real_floating(ns, out.dtype) and out.dtype != dtype:
        out = ns.astype(out, dtype)
    if record.get("numpy_scalar") and isinstance(out, np.ndarray) and out.ndim == 0:
        out = out[()]  # NumPy arithmetic on 0-d arrays gives scalars; give back what was saved
    return out
