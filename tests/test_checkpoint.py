"""Checkpoints: bit-exact round trips on every backend, resumed trajectories, damaged and mismatched files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn.backends import array_namespace, to_host_exact
from lowrank_ggn.checkpoint import CHECKPOINT_VERSION
from tests._streams import stream


def _bits(a):
    host, name = to_host_exact(a)
    return name, host.shape, host.tobytes()


def _assert_same(a, b):
    """Same structure, same types, same bits, same namespace."""
    assert type(a) is type(b)
    if lg.backends.is_array(a):
        assert _bits(a) == _bits(b)
        assert type(array_namespace(a)) is type(array_namespace(b))
        assert array_namespace(a).__name__ == array_namespace(b).__name__
        return
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, tuple | list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)  # NaN scalars  # noqa: PLR0124


def _states(xp, steps=7, dim=11, rank=3):
    rng = np.random.default_rng(0)
    data = stream(rng, steps, dim, "power")
    g = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    s = lg.ginger_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    q = lg.qng_init(dim, rank, xp=xp.module, dtype=xp.dtype)
    g_update = xp.maybe_jit(lg.ginger_update, static_argnames=("method", "reorthonormalize_every"))
    q_update = xp.maybe_jit(lg.qng_update)
    for d in data:
        g = g_update(g, xp.asarray(d), decay=0.9)
        s = g_update(s, xp.asarray(d), decay=0.9, damping=0.1, method="sherman-morrison")
        q = q_update(q, xp.asarray(d), decay=0.9)
    g = g_update(g, xp.asarray(np.full(dim, np.nan)), decay=0.9)  # num_nonfinite = 1
    return {"eigen": g, "sherman-morrison": s, "qng": q}


def test_round_trip_is_bit_exact(xp, tmp_path, record_property):
    """Save, then restore on the recorded backend, onto like=, and onto NumPy: the same bits."""
    for name, state in _states(xp).items():
        path = lg.save_checkpoint(tmp_path / f"{name}.npz", state, metadata={"method": name})
        _assert_same(state, lg.load_checkpoint(path))
        _assert_same(state, lg.load_checkpoint(path, like=state))
        on_numpy = lg.load_checkpoint(path, xp=np)
        for a, b in zip(state, on_numpy, strict=True):
            assert _bits(a) == _bits(b)
            assert isinstance(b, np.ndarray | np.generic)
        manifest = lg.read_checkpoint_manifest(path)
        assert manifest["metadata"] == {"method": name}
        assert manifest["version"] == CHECKPOINT_VERSION
        assert [r["path"] for r in manifest["leaves"]] == [f".{f}" for f in type(state)._fields]
    record_property("outcome", "bit-exact (recorded backend, like=, xp=numpy)")


@pytest.mark.parametrize("method", ["eigen", "sherman-morrison", "qng"])
def test_resume_gives_the_uninterrupted_trajectory(xp, method, tmp_path, record_property):
    """Run 12 steps; or run 5, checkpoint, restore, run 7: the final states are bit for bit equal."""
    rng = np.random.default_rng(1)
    data = [xp.asarray(d) for d in stream(rng, 12, 9, "power")]
    if method == "qng":
        init = lambda: lg.qng_init(9, 3, xp=xp.module, dtype=xp.dtype)  # noqa: E731
        update = xp.maybe_jit(lambda s, d: lg.qng_update(s, d, decay=0.95))
    else:
        kw = {"damping": 0.05, "method": method} if method == "sherman-morrison" else {}
        init = lambda: lg.ginger_init(9, 3, xp=xp.module, dtype=xp.dtype)  # noqa: E731
        update = xp.maybe_jit(lambda s, d: lg.ginger_update(s, d, decay=0.95, reorthonormalize_every=4, **kw))
    whole = init()
    for d in data:
        whole = update(whole, d)
    part = init()
    for d in data[:5]:
        part = update(part, d)
    path = lg.save_checkpoint(tmp_path / "mid.npz", part)
    del part
    for restored in (lg.load_checkpoint(path), lg.load_checkpoint(path, like=init())):
        resumed = restored
        for d in data[5:]:
            resumed = update(resumed, d)
        _assert_same(whole, resumed)
    record_property("outcome", "resumed trajectory bit-identical to the uninterrupted run")


class _Leaves(NamedTuple):
    a: object
    b: object


def test_generic_pytrees(xp, tmp_path):
    """NamedTuples, tuples, lists, dicts with str/int keys, scalars, None, int/bool/float arrays."""
    rng = np.random.default_rng(2)
    tree = {
        "state": _states(xp, steps=2)["eigen"],
        3: [xp.asarray(np.arange(5), dtype=np.int32), xp.asarray(rng.standard_normal((2, 0)))],
        "opt": (_Leaves(a=xp.asarray(rng.random(3) > 0.5, dtype=bool), b=None), 0.1, 7, "adam", True, None),
        "nan": float("nan"),
        "empty": {},
        "nested": [[[]]],
    }
    path = lg.save_checkpoint(tmp_path / "tree.npz", tree)
    _assert_same(tree, lg.load_checkpoint(path))
    _assert_same(tree, lg.load_checkpoint(path, like=tree))


def test_restore_onto_namespace_device_and_dtype(tmp_path):
    """A float64 NumPy state restored as float32 torch tensors, as JAX, and on another array_api_strict device."""
    state = _states(_np64(), steps=4)["eigen"]
    path = lg.save_checkpoint(tmp_path / "s.npz", state)
    torch = pytest.importorskip("torch")
    t32 = lg.load_checkpoint(path, xp=torch, dtype=torch.float32)
    assert t32.basis.dtype == torch.float32
    assert t32.step.dtype == torch.int32  # only floating leaves are converted
    np.testing.assert_array_equal(t32.basis.numpy(), np.asarray(state.basis, dtype=np.float32))
    t64 = lg.load_checkpoint(path, xp=torch, device="cpu")
    assert _bits(t64.basis) == _bits(state.basis)
    like32 = lg.ginger_init(11, 3, xp=torch, dtype=torch.float32)
    with pytest.raises(lg.CheckpointError, match="dtype mismatch"):
        lg.load_checkpoint(path, like=like32)
    assert lg.load_checkpoint(path, like=like32, dtype=torch.float32).basis.dtype == torch.float32
    strict = pytest.importorskip("array_api_strict")
    dev = strict.Device("device1")
    on_dev = lg.load_checkpoint(path, xp=strict, device=dev)
    assert on_dev.basis.device == dev
    like_dev = lg.ginger_init(11, 3, xp=strict, device=dev)
    assert lg.load_checkpoint(path, like=like_dev).eigvals.device == dev
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    j = lg.load_checkpoint(path, xp=jax.numpy)
    assert _bits(j.eigvals) == _bits(state.eigvals)


def test_bfloat16_and_float16_leaves(tmp_path):
    """bfloat16 and float16 leaves of torch, JAX and NumPy keep their dtype and bits (bfloat16 stored as uint16)."""
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    tree = {
        "t": torch.randn(5).to(torch.bfloat16),
        "h": torch.randn(3).to(torch.float16),
        "j": jnp.asarray(np.linspace(-3, 3, 7), dtype=jnp.bfloat16),
        "n": np.linspace(0, 1, 4).astype(np.float16),
    }
    path = lg.save_checkpoint(tmp_path / "half.npz", tree)
    _assert_same(tree, lg.load_checkpoint(path))
    assert lg.read_checkpoint_manifest(path)["leaves"][0]["dtype"] == "bfloat16"
    to_torch = lg.load_checkpoint(path, xp=torch)
    assert to_torch["j"].dtype == torch.bfloat16
    assert _bits(to_torch["j"]) == _bits(tree["j"])


def test_torch_optimizer_state_dict(tmp_path):
    """A torch.optim state dict (int keys, tensors, hyper-parameters) resumes the same trajectory."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    w0 = torch.randn(6, dtype=torch.float64)
    target = torch.randn(6, dtype=torch.float64)

    def run(param, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((param - target) ** 4).sum().backward()
            opt.step()

    p1 = torch.nn.Parameter(w0.clone())
    o1 = torch.optim.Adam([p1], lr=0.05)
    run(p1, o1, 8)
    p2 = torch.nn.Parameter(w0.clone())
    o2 = torch.optim.Adam([p2], lr=0.05)
    run(p2, o2, 3)
    path = lg.save_checkpoint(tmp_path / "opt.npz", {"params": [p2.detach()], "opt": o2.state_dict()})
    ckpt = lg.load_checkpoint(path)
    p3 = torch.nn.Parameter(ckpt["params"][0].clone())
    o3 = torch.optim.Adam([p3], lr=0.05)
    o3.load_state_dict(ckpt["opt"])
    run(p3, o3, 5)
    assert torch.equal(p1.detach(), p3.detach())


def test_optax_state(tmp_path):
    """An optax state (clip + Adam) restores to the same structure and gives bit-identical updates."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    params = {"w": jnp.linspace(-1.0, 1.0, 5), "b": jnp.zeros(2)}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda x: x + 0.5, params)
    _, state = tx.update(grads, state, params)
    path = lg.save_checkpoint(tmp_path / "optax.npz", state)
    for restored in (lg.load_checkpoint(path), lg.load_checkpoint(path, like=tx.init(params))):
        assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
        u1, _ = tx.update(grads, state, params)
        u2, _ = tx.update(grads, restored, params)
        for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2), strict=True):
            assert _bits(a) == _bits(b)


def _np64():
    from tests._backends import make_backend

    return make_backend("numpy", "float64")


@pytest.fixture
def saved(tmp_path):
    state = _states(_np64(), steps=5)["qng"]
    return state, lg.save_checkpoint(tmp_path / "q.npz", state)


def test_truncated_file(saved, record_property):
    """A file cut at any length is a CheckpointError, never a partly restored state."""
    _, path = saved
    raw = path.read_bytes()
    for cut in sorted({0, 1, 10, 100, len(raw) // 3, len(raw) // 2, len(raw) - 22, len(raw) - 1}):
        path.write_bytes(raw[:cut])
        with pytest.raises(lg.CheckpointError, match="not a readable checkpoint|members|corrupted"):
            lg.load_checkpoint(path)
    record_property("outcome", "CheckpointError at every truncation length")


def test_corrupted_bytes(saved, record_property):
    """A flipped byte anywhere in the stored data or headers is detected (CRC-32 or SHA-256)."""
    state, path = saved
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        spans = [(i.header_offset, i.header_offset + 30 + len(i.filename) + i.compress_size) for i in z.infolist()]
    detected = 0
    for start, end in spans:
        for offset in np.linspace(start, end - 1, 7).astype(int):
            bad = bytearray(raw)
            bad[offset] ^= 0x5A
            path.write_bytes(bytes(bad))
            try:
                back = lg.load_checkpoint(path)
            except lg.CheckpointError:
                detected += 1
                continue
            _assert_same(state, back)  # an undetected flip must have hit an unused byte
    assert detected >= len(spans) * 6
    record_property("outcome", f"{detected}/{7 * len(spans)} flips detected, the rest in unused header bytes")


def _digest(manifest):
    """The documented manifest digest: SHA-256 of the canonical JSON of every other field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _rewrite_manifest(path, edit, *, resign=True):
    """Apply ``edit(manifest, members)``; re-sign the manifest (as a deliberate edit would) unless told not to."""
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    manifest = json.loads(bytes(members["__manifest__"]).decode())
    edit(manifest, members)
    if resign and "manifest_sha256" in manifest:
        manifest["manifest_sha256"] = _digest(manifest)
    members["__manifest__"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    with path.open("wb") as f:
        np.savez(f, **members)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m, a: m.update(version=CHECKPOINT_VERSION + 1), "newer"),
        (lambda m, a: m.update(version="1"), "invalid format version"),
        (lambda m, a: m.update(format="other"), "not a lowrank_ggn.checkpoint"),
        (lambda m, a: m.pop("tree"), "no 'tree'"),
        (lambda m, a: m["leaves"][0].update(shape=[1, 2]), "shape"),
        (lambda m, a: m["leaves"][1].update(dtype="float32"), "dtype"),
        (lambda m, a: m["leaves"][2].update(sha256="0" * 64), "corrupted"),
        (lambda m, a: a.update(extra=np.zeros(2)), "do not match"),
        (lambda m, a: a.pop("leaf_00003"), "do not match"),
        (lambda m, a: m["tree"].update(type="no_such_module:State"), "not imported"),
        (lambda m, a: m["tree"]["items"].pop(), "malformed"),
        (lambda m, a: m["tree"]["items"][0].update(leaf=99), "malformed"),
        (lambda m, a: m["leaves"][0].update(backend="nonesuch"), "cannot restore"),
    ],
)
def test_malformed_or_mismatched_manifest(saved, edit, match):
    """A manifest that is edited (version, format, tree, shapes, dtypes, digests, members) is a CheckpointError."""
    _, path = saved
    _rewrite_manifest(path, edit)
    with pytest.raises(lg.CheckpointError, match=match):
        lg.load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    """A plain .npz, a text file or an empty file is a CheckpointError; a missing path is FileNotFoundError."""
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.ones(3))
    with pytest.raises(lg.CheckpointError, match="not a lowrank_ggn checkpoint"):
        lg.load_checkpoint(plain)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(lg.CheckpointError):
        lg.load_checkpoint(text)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(lg.CheckpointError):
        lg.load_checkpoint(empty)
    with pytest.raises(FileNotFoundError):
        lg.load_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        lg.load_checkpoint(tmp_path)


def test_like_mismatch(saved, record_property):
    """like= of another shape, structure or dtype is a CheckpointError naming the first mismatch."""
    state, path = saved
    cases = [
        (lg.qng_init(11, 4), "shape mismatch"),
        (lg.ginger_init(11, 3), "structure mismatch"),
        (lg.qng_init(11, 3, dtype=np.float32), "dtype mismatch"),
        ({"factors": state.factors}, "structure mismatch"),
        (list(state), "structure mismatch"),
    ]
    for like, match in cases:
        with pytest.raises(lg.CheckpointError, match=match):
            lg.load_checkpoint(path, like=like)
    record_property("outcome", "CheckpointError naming the first mismatching field")


def test_write_is_atomic(saved, monkeypatch):
    """A failure while writing leaves the previous file intact and no temporary file behind."""
    state, path = saved
    before = path.read_bytes()
    path.chmod(0o640)

    def broken(*args, **kwargs):
        args[0].write(b"partial")
        msg = "disk full"
        raise OSError(msg)

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        lg.save_checkpoint(path, _states(_np64(), steps=1)["eigen"])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    lg.save_checkpoint(path, state)  # replacing keeps the file's permissions
    assert path.stat().st_mode & 0o777 == 0o640
    _assert_same(state, lg.load_checkpoint(path))


def test_what_cannot_be_saved(tmp_path):
    """Objects, tuple keys, non-JSON metadata and traced arrays are a TypeError, and no file is written."""
    with pytest.raises(TypeError, match="cannot checkpoint"):
        lg.save_checkpoint(tmp_path / "x.npz", {"f": object()})
    with pytest.raises(TypeError, match="dict keys"):
        lg.save_checkpoint(tmp_path / "x.npz", {(1, 2): np.ones(2)})
    with pytest.raises(TypeError, match="metadata"):
        lg.save_checkpoint(tmp_path / "x.npz", np.ones(2), metadata={"a": object()})
    with pytest.raises(TypeError, match="metadata"):
        lg.save_checkpoint(tmp_path / "x.npz", np.ones(2), metadata={"a": float("nan")})
    assert not Path(tmp_path / "x.npz").exists()
    jax = pytest.importorskip("jax")

    def inside(x):
        lg.save_checkpoint(tmp_path / "x.npz", x)
        return x

    with pytest.raises(TypeError, match="traced"):
        jax.jit(inside)(jax.numpy.ones(2))


@pytest.mark.parametrize("kind", ["ginger", "qng"])
def test_lowrank_ggn_optax_state_resumes(kind, tmp_path):
    """A lowrank_ggn.optim.optax state (NamedTuples of Ginger/QNG states, None blocks) resumes bit for bit."""
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    optax = pytest.importorskip("optax")
    from lowrank_ggn.optim import optax as lgo

    rng = np.random.default_rng(7)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), dtype=jnp.float32), "b": jnp.zeros((), jnp.float32)}
    stream = [
        jax.tree_util.tree_map(lambda p: jnp.asarray(rng.standard_normal(p.shape), dtype=p.dtype), params)
        for _ in range(14)
    ]
    tx = lgo.ginger(0.05, rank=2, damping=0.5) if kind == "ginger" else lgo.qng(0.05, rank=2)

    def run(params, state, vectors):
        for v in vectors:
            grads = jax.tree_util.tree_map(lambda p, x: p + x, params, v)
            updates, state = tx.update(grads, state, params, curvature=v)
            params = optax.apply_updates(params, updates)
        return params, state

    full = run(params, tx.init(params), stream)
    half = run(params, tx.init(params), stream[:6])
    path = lg.save_checkpoint(tmp_path / "opt.npz", half)
    for restored in (lg.load_checkpoint(path), lg.load_checkpoint(path, like=(params, tx.init(params)))):
        assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(half)
        resumed = run(*restored, stream[6:])
        for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed), strict=True):
            assert _bits(a) == _bits(b)


@pytest.mark.parametrize("kind", ["Ginger", "QNG"])
def test_lowrank_ggn_torch_optimizer_resumes(kind, tmp_path):
    """A lowrank_ggn.optim.torch optimiser's state dict (block states, momentum) resumes bit for bit."""
    torch = pytest.importorskip("torch")
    from lowrank_ggn.optim import torch as lgt

    torch.manual_seed(3)
    w0 = [torch.randn(5, 2), torch.randn(2)]
    target = [torch.randn(5, 2), torch.randn(2)]
    curv = [[torch.randn(5, 2), torch.randn(2)] for _ in range(12)]
    make = getattr(lgt, kind)

    def run(ps, opt, vectors):
        for d in vectors:
            opt.zero_grad()
            sum(((p - t) ** 2).sum() for p, t in zip(ps, target, strict=True)).backward()
            opt.step(curvature=d)

    def fresh(values):
        ps = [torch.nn.Parameter(v.clone()) for v in values]
        return ps, make(ps, lr=0.05, rank=2)

    p1, o1 = fresh(w0)
    run(p1, o1, curv)
    p2, o2 = fresh(w0)
    run(p2, o2, curv[:5])
    path = lg.save_checkpoint(tmp_path / "opt.npz", {"params": [p.detach() for p in p2], "opt": o2.state_dict()})
    ckpt = lg.load_checkpoint(path)
    p3, o3 = fresh(ckpt["params"])
    o3.load_state_dict(ckpt["opt"])
    run(p3, o3, curv[5:])
    for a, b in zip(p1, p3, strict=True):
        assert _bits(a.detach()) == _bits(b.detach())


def test_like_dict_key_order_is_not_structure(tmp_path):
    """JAX rebuilds dicts with sorted keys: a like= with the same keys in another order restores by key."""
    tree = {"w": np.arange(3.0), "b": np.zeros(2)}
    path = lg.save_checkpoint(tmp_path / "d.npz", tree)
    restored = lg.load_checkpoint(path, like={"b": np.ones(2), "w": np.ones(3)})
    _assert_same(tree, restored)
    with pytest.raises(lg.CheckpointError, match=r"keys \['w', 'b'\].*keys \['w', 'c'\]"):
        lg.load_checkpoint(path, like={"w": np.ones(3), "c": np.ones(2)})


# --------------------------------------------------------------------------- format versions

# A file written by the version-1 code (lowrank_ggn before the manifest digest), zlib-compressed and base64-encoded:
# {"state": GingerState(np.eye(4, 2), [2.0, 0.5], np.float64(0.25), np.int32(3), np.int32(0)),
#  "opt": {"lr": 0.1, "n": 3, "name": "adam", "flag": True, "none": None, 7: [np.arange(3, dtype=np.int32)]}}
# with metadata {"epoch": 2}; its GingerState is named lowrank_ggn._ginger:GingerState.
_V1_FILE = (
    "eNrNl09v5DQUwNM/gNjDqge4oiGXYaXpKHacOClIywHBoWJVCXFAw2hw7Odp1EwSJZnCqFRCooceeqjEhU+ABHcQQkLaj7ASHDhy"
    "Zw/wCcDOJG2TTastHSFcjdJ5fs/27+U9z3t7uxub28ZyvG4M/L+++7sa941XjAiYnFh6DON0sWZsGY8r3fr51aMP39/7aM04NI76"
    "AnKe9Xd6/bek1x/0+jLJiozFkyQToOXvsigHJc/3WQrq+xtk0MMPBr3j3r8e95an+POh0Tmuk1+OvQb/j+94r3Xyo5r/vNI9XwU/"
    "HtyN/oLfeHv5+P1hk+fL3379oZMH1zynle7pKnjuSnPB86TFMfrplzc7Oeya46TSPbmRIyT/FcfGM7H1/avyQScD+b8yPJsf609/"
    "/raTwakZzirds1Uw2KvJjzX1WX+G5Y/NT8Y1y5ZimUxmLA4l5MVkUtP0Xl5q189Oms/n6PmyHVve3YDuHZlqlxkrzJ2eGSWfqu0O"
    "JtNpPOT7wA/SJIwLc9AzDyHLwyRWSkh9i8IgY9licik1rSEaWlozYPwAYpEr4ciM57N0YY6VuMgAlOjIPAhjoQ1EyMuVD2BR6o7M"
    "vMi0IC9YAdrmQpKkhTnWi4QFzErly2ViNgNRzNMItGaxSKENMpmG8RSynffKxwfl6kpVhhBVpwxYHuZaBuH0ULlY/yvCnDPldrE8"
    "EqT6qXAmcRLLMA6XR+w6EcsyttDaOpKVwDoe9K6fRTfO4htn7RtnyfG4MX+tw6Os4e24+U35tyGQEZs2NZK40ljGCr3uVckoYctg"
    "YtG8fE3WZ2joXxks3SZm49B1+FUWTeLqABfLMcFmTfMgSaKrKkU2h4ZCefiGJArzcsvneLOO8vC49LKWHEKtDotyoYtCR5ukrNjX"
    "0lG/jO/+eHgRdVXGlMcp80WHHxyGvITi6bwU1KFdetElZVjqa0DvqYue8VKAHbcEt2zqWOBgGXg+ICmpoB53bZ8xQkA6xLEZSBc8"
    "n7oWBIwIiokIaBAApgy5VbSni4lKg4hlak2pL5+lq1qAqBvwSjbdHbHFx5DEUjg+IpRQ7khEuEABOFQK10cKADixAhBcIjvwceAT"
    "BwTlyhPALA+cW/Hhbr7GFXF3wiYgplhSz7JdEbgUI0m5pIQQGzngSNd2LYJdoahtQYgrXAYeUy9aUksgm1RHbgFeBn+Lz+7mq2+9"
    "26GpjLXxDWC+8CX2LUeFmRuAi13mScf3nAC7gPwA2zQgxKNYRbBrIw8hIQlBruSIIhtR7zZgpBuseY2vnFBIW7rI9yzCfBWkAbEc"
    "inwsOLGFoMQDRqnHBHdwwInvcfCUNwi3EAkULvJvQ+g0CdUvZX88ouORNV4Fl91KOuEIrjLOE2C5jHAVowrGwV4gfNtFjJRp5mNG"
    "FIokAnkWB8EYMOZIwvm1Sae3mUGh7u+ClUUCpAnfL3//jvd219a3N5r95OOqW7x/pev6Qpdkre6ybat7sfOq02rZrhmtzqxtq/ue"
    "06qrado+uWqLu2x1r3FSVeFN26/XjVbn0bbVNX637ccbRqvib9vq2vqsqpybtr1No1Vpt211LatrVP3Zatg+VbbtynZv94UX9exL"
    "6u8b5Y9H5Xb/AENPCVk="
)


def _v1_file(tmp_path):
    path = tmp_path / "v1.npz"
    path.write_bytes(zlib.decompress(base64.b64decode("".join(_V1_FILE))))
    return path


def test_version_1_files_still_load(tmp_path):
    """A file written by the version-1 code loads bit for bit; an edit of its tree is still caught."""
    path = _v1_file(tmp_path)
    # The file's GingerState has the five fields of the time; it loads with escaped = discarded.
    expected = {
        "state": lg.GingerState(
            np.eye(4, 2), np.array([2.0, 0.5]), np.float64(0.25), np.float64(0.25), np.int32(3), np.int32(0)
        ),
        "opt": {"lr": 0.1, "n": 3, "name": "adam", "flag": True, "none": None, 7: [np.arange(3, dtype=np.int32)]},
    }
    _assert_same(expected, lg.load_checkpoint(path))
    _assert_same(expected, lg.load_checkpoint(path, like=expected))
    manifest = lg.read_checkpoint_manifest(path)
    assert (manifest["version"], manifest["metadata"], "manifest_sha256" in manifest) == (1, {"epoch": 2}, False)
    _rewrite_manifest(path, lambda m, a: m["tree"]["items"][0]["items"][1].update(leaf=0))  # eigvals is basis
    with pytest.raises(lg.CheckpointError, match="2 times"):
        lg.load_checkpoint(path)


def test_lowrank_ggn_types_are_saved_by_public_name(tmp_path):
    """States are named lowrank_ggn:GingerState, and a lowrank_ggn type whose module moved resolves by that name."""
    state = lg.ginger_init(5, 2)
    path = lg.save_checkpoint(tmp_path / "s.npz", {"s": state})
    assert lg.read_checkpoint_manifest(path)["tree"]["items"][0]["type"] == "lowrank_ggn:GingerState"
    _rewrite_manifest(path, lambda m, a: m["tree"]["items"][0].update(type="lowrank_ggn._moved:GingerState"))
    _assert_same({"s": state}, lg.load_checkpoint(path))


# --------------------------------------------------------------------------- permissions, links, temporary files

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions, links and signals")


@posix_only
@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002])
def test_new_file_permissions_follow_the_umask(tmp_path, umask):
    """A new file gets 0o666 less the umask, as open() gives (not a fixed 0o644); an existing file keeps its mode."""
    old = os.umask(umask)
    try:
        path = lg.save_checkpoint(tmp_path / "new.npz", np.ones(3))
        plain = tmp_path / "plain"
        plain.write_bytes(b"")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask == plain.stat().st_mode & 0o777
    path.chmod(0o600)
    lg.save_checkpoint(path, np.zeros(3))
    assert path.stat().st_mode & 0o777 == 0o600


@posix_only
def test_saving_through_a_symlink_replaces_its_target(tmp_path):
    """A symlink is written through, as open() would: the link stays, its (possibly missing) target is written."""
    real = lg.save_checkpoint(tmp_path / "real.npz", np.ones(3))
    link = tmp_path / "link.npz"
    link.symlink_to(real.name)
    assert lg.save_checkpoint(link, np.arange(4.0)) == link
    assert link.is_symlink()
    np.testing.assert_array_equal(lg.load_checkpoint(real), np.arange(4.0))
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to("target.npz")
    lg.save_checkpoint(dangling, np.ones(2))
    assert dangling.is_symlink()
    np.testing.assert_array_equal(lg.load_checkpoint(tmp_path / "target.npz"), np.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.npz", "link.npz", "real.npz", "target.npz"]


def test_interrupted_write_leaves_no_temporary_file(saved, monkeypatch):
    """A KeyboardInterrupt in the middle of the write leaves the previous file intact and no temporary file."""
    _state, path = saved
    before = path.read_bytes()

    def interrupted(f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lg.save_checkpoint(path, _states(_np64(), steps=1)["eigen"])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


_KILLED_SAVE = """
import os, signal, sys
import numpy as np
import lowrank_ggn as lg

def killed(f, *args, **kwargs):
    f.write(b"partial")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

np.savez = killed
lg.save_checkpoint(sys.argv[1], np.ones(3))
"""


@posix_only
def test_a_killed_save_is_cleaned_up_by_the_next(tmp_path):
    """A save killed mid-write leaves its temporary file; the next save removes it, but not a live writer's."""
    path = lg.save_checkpoint(tmp_path / "c.npz", np.zeros(2))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(  # noqa: S603 - this interpreter on a script of this file
        [sys.executable, "-c", _KILLED_SAVE, str(path)], env=env, capture_output=True, check=False, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    (leftover,) = (p for p in tmp_path.iterdir() if p != path)
    assert leftover.name.startswith(".c.npz.")
    assert leftover.name.endswith(".lowrank_ggn-tmp")
    pid, host, token = leftover.name.split(".")[3:6]
    live = tmp_path / f".c.npz.{os.getppid()}.{host}.{token}.lowrank_ggn-tmp"  # a writer that still runs
    live.write_bytes(b"in progress")
    foreign = [tmp_path / ".c.npz.abc123.tmp", tmp_path / f".d.npz.{pid}.{host}.{token}.lowrank_ggn-tmp"]
    for p in foreign:
        p.write_bytes(b"not ours")
    lg.save_checkpoint(path, np.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in [path, live, *foreign])
    np.testing.assert_array_equal(lg.load_checkpoint(path), np.ones(2))


ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- compressed and oversized members


def _recompress(path, compression):
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, raw in members.items():
            z.writestr(name, raw)


def test_compressed_members_are_refused_before_inflating(saved, tmp_path):
    """A deflated member is a CheckpointError before anything is inflated; a 64 MB bomb costs no memory."""
    _, path = saved
    _recompress(path, zipfile.ZIP_DEFLATED)
    with pytest.raises(lg.CheckpointError, match="compressed"):
        lg.load_checkpoint(path)
    bomb = lg.save_checkpoint(tmp_path / "bomb.npz", {"x": np.zeros(2)})
    header = np.lib.format.header_data_from_array_1_0(np.zeros(8 << 20))
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as z, z.open("extra.npy", "w") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(lg.CheckpointError, match="compressed"):
            lg.load_checkpoint(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB used to refuse the file"


def test_member_sizes_are_checked_before_reading(saved, monkeypatch):
    """A member larger than the manifest's shape and dtype allow is refused from the zip directory, unread."""
    _, path = saved
    _rewrite_manifest(path, lambda m, a: a.update(leaf_00000=np.zeros((1000, 1000))))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile, "open", lambda self, name, *a, **k: opened.append(name) or real_open(self, name, *a, **k)
    )
    with pytest.raises(lg.CheckpointError, match="shape .* and dtype .* make"):
        lg.load_checkpoint(path)
    assert [getattr(n, "filename", n) for n in opened] == ["__manifest__.npy"]


# --------------------------------------------------------------------------- edited manifests, non-finite states


class _Hyper(NamedTuple):
    lr: float
    betas: tuple


@pytest.fixture
def saved_tree(tmp_path):
    tree = {"state": _states(_np64(), steps=5)["eigen"], "opt": _Hyper(lr=0.05, betas=(0.9, 0.99))}
    return tree, lg.save_checkpoint(tmp_path / "t.npz", tree, metadata={"epoch": 4})


def _state_items(m):
    return m["tree"]["items"][0]["items"]


def _scalar_for_array(m, a):
    _state_items(m)[1] = {"kind": "float", "value": (1.0).hex()}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        pytest.param(lambda m, a: _state_items(m)[1].update(leaf=0), "2 times", id="eigvals-is-basis"),
        pytest.param(_scalar_for_array, "not in the manifest's tree", id="array-replaced-by-scalar"),
        pytest.param(lambda m, a: m["leaves"][1].update(path=".basis"), "its record says", id="leaf-path"),
        pytest.param(
            lambda m, a: m["tree"]["items"][0].update(type="lowrank_ggn.no_such_module:Thing"),
            "not a NamedTuple",
            id="missing-lowrank-ggn-module",
        ),
    ],
)
def test_structural_edits_are_caught_even_if_resigned(saved_tree, edit, match):
    """A leaf used twice or not at all, a stale leaf path, a missing lowrank_ggn module: CheckpointError."""
    _, path = saved_tree
    _rewrite_manifest(path, edit)
    with pytest.raises(lg.CheckpointError, match=match):
        lg.load_checkpoint(path)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda m, a: m["tree"]["items"][1]["items"][0].update(value=(0.5).hex()), id="hyperparameter"),
        pytest.param(lambda m, a: m["metadata"].update(epoch=5), id="metadata"),
        pytest.param(lambda m, a: m["tree"]["items"][1].update(type="tests.test_checkpoint:_Leaves"), id="type"),
        pytest.param(
            lambda m, a: m["leaves"][3].update(numpy_scalar=not m["leaves"][3].get("numpy_scalar")), id="leaf-record"
        ),
        pytest.param(lambda m, a: m.pop("manifest_sha256"), id="digest-removed"),
    ],
)
def test_unsigned_manifest_edits_are_caught(saved_tree, edit):
    """Any edit of a version-2 manifest that does not recompute its digest (a hyper-parameter, ...) is caught."""
    _, path = saved_tree
    _rewrite_manifest(path, edit, resign=False)
    with pytest.raises(lg.CheckpointError, match="edited"):
        lg.load_checkpoint(path)
    with pytest.raises(lg.CheckpointError, match="edited"):
        lg.read_checkpoint_manifest(path)


@pytest.mark.parametrize("kind", ["ginger", "qng", "product"])
def test_non_finite_states_are_refused(kind, tmp_path):
    """A GingerState/QNGState/GingerProductState with NaN or inf is a CheckpointError naming the field."""
    if kind == "ginger":
        state = lg.ginger_init(6, 2)
        state = state._replace(basis=np.where(np.eye(6, 2) > 0, np.nan, state.basis))
        field = r"\['s'\]\.basis"
    elif kind == "qng":
        state = lg.qng_init(6, 2)
        state = state._replace(betas=np.array([1.0, np.inf]))
        field = r"\['s'\]\.betas"
    else:
        state = lg.ginger_product_init(6, 2)
        state = state._replace(discarded=np.asarray(-np.inf, dtype=state.discarded.dtype))
        field = r"\['s'\]\.discarded"
    path = lg.save_checkpoint(tmp_path / "bad.npz", {"s": state, "ok": np.array([np.nan, np.inf])})
    for like in (None, {"s": state, "ok": np.zeros(2)}):
        with pytest.raises(lg.CheckpointError, match=field + ".*NaN or inf"):
            lg.load_checkpoint(path, like=like)
    assert lg.read_checkpoint_manifest(path)["leaves"][0]["path"] == "['s'].basis" if kind == "ginger" else True


def test_non_finite_values_elsewhere_load(tmp_path):
    """NaN and inf outside a state (optimiser bookkeeping, a NamedTuple that is not a state) load as they are."""
    tree = {
        "best_loss": np.array(np.inf),
        "not_a_state": lg.GingerState(np.array([np.nan]), np.ones(2), None, None, 0, 1),
        "hyper": _Hyper(lr=float("inf"), betas=(np.array([np.nan]),)),
    }
    path = lg.save_checkpoint(tmp_path / "nan.npz", tree)
    _assert_same(tree, lg.load_checkpoint(path))


# --------------------------------------------------------------------------- dtypes and callables


def test_dtype_leaves_round_trip(tmp_path):
    """NumPy dtypes and scalar types, torch, JAX and array_api_strict dtypes come back as the same objects."""
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    strict = pytest.importorskip("array_api_strict")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    tree = {
        "np": [np.dtype("float32"), np.dtype(ml_dtypes.bfloat16), np.dtype(bool)],
        "np_type": (np.float64, np.int8, ml_dtypes.bfloat16),
        "torch": [torch.float64, torch.bfloat16, torch.int32, torch.bool],
        "jax": [jnp.float32, jnp.bfloat16, jnp.complex64],
        "strict": [strict.float64, strict.uint8],
    }
    path = lg.save_checkpoint(tmp_path / "dtypes.npz", tree)
    back = lg.load_checkpoint(path)
    assert back["np"] == tree["np"]
    assert all(isinstance(d, np.dtype) for d in back["np"])
    assert back["np_type"] == tree["np_type"]
    for key in ("torch", "jax", "strict"):
        assert all(a is b for a, b in zip(back[key], tree[key], strict=True)), key
    assert lg.load_checkpoint(path, like=tree)["torch"][0] is torch.float64
    with pytest.raises(TypeError, match=r"cannot checkpoint a numpy.dtypes.StrDType at \['u'\]"):
        lg.save_checkpoint(tmp_path / "u.npz", {"u": np.dtype("<U3")})


def _damping_schedule(count):
    return 0.1 * 0.9**count


def test_callables_are_a_type_error_naming_the_path(tmp_path):
    """A function (a schedule) cannot be stored: TypeError naming its path and what to do; no file written."""
    for fn in (_damping_schedule, lambda t: t, np.sin):
        with pytest.raises(TypeError, match=r"callable .* at \['opt'\]\['param_groups'\]\[0\]\['damping'\].*remove it"):
            lg.save_checkpoint(tmp_path / "f.npz", {"opt": {"param_groups": [{"damping": fn}]}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("schedule", [False, True], ids=["constant-damping", "damping-schedule"])
def test_torch_ginger_recipe_round_trip(tmp_path, schedule):
    """The documented recipe with a real torch Ginger (state_dtype=float64; a schedule via the documented
    workaround) restores the block states bit for bit, and the next steps equal the uninterrupted run's."""
    torch = pytest.importorskip("torch")
    from lowrank_ggn.optim import torch as lgt

    rng = np.random.default_rng(11)
    init = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    grads = [[torch.tensor(rng.standard_normal(p.shape), dtype=torch.float32) for p in init] for _ in range(9)]
    curvs = [[torch.tensor(rng.standard_normal(p.shape), dtype=torch.float32) for p in init] for _ in range(9)]
    damping = _damping_schedule if schedule else 0.1

    def fresh():
        ps = [torch.nn.Parameter(torch.tensor(p)) for p in init]
        return ps, lgt.Ginger(ps, lr=0.05, rank=2, damping=damping, weight_decay=1e-3, state_dtype=torch.float64)

    def run(ps, opt, steps):
        for t in steps:
            for p, g in zip(ps, grads[t], strict=True):
                p.grad = g.clone()
            opt.step(curvature=curvs[t])

    full_ps, full_opt = fresh()
    run(full_ps, full_opt, range(9))
    ps, opt = fresh()
    run(ps, opt, range(5))
    state = opt.state_dict()
    path = tmp_path / "ckpt.npz"
    if schedule:
        with pytest.raises(TypeError, match=r"\['optimizer'\]\['param_groups'\]\[0\]\['damping'\]"):
            lg.save_checkpoint(path, {"model": [p.detach() for p in ps], "optimizer": state})
        for group in state["param_groups"]:
            del group["damping"]
    lg.save_checkpoint(path, {"model": [p.detach() for p in ps], "optimizer": state})
    ckpt = lg.load_checkpoint(path)
    assert ckpt["optimizer"]["param_groups"][0]["state_dtype"] is torch.float64
    new_ps, new_opt = fresh()
    with torch.no_grad():
        for p, v in zip(new_ps, ckpt["model"], strict=True):
            p.copy_(v)
    state = ckpt["optimizer"]
    if schedule:
        for group, live in zip(state["param_groups"], new_opt.param_groups, strict=True):
            group["damping"] = live["damping"]
    new_opt.load_state_dict(state)
    for (_, a), (_, b) in zip(new_opt.block_states(), opt.block_states(), strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype
            assert _bits(x) == _bits(y)
    run(new_ps, new_opt, range(5, 9))
    for a, b in zip(full_ps, new_ps, strict=True):
        assert _bits(a.detach()) == _bits(b.detach())


# --------------------------------------------------------------------------- JAX sharding


def _sharded_case(tmp):
    """Save on 4 devices; load onto a 2-device mesh (like= arrays or ShapeDtypeStructs) and onto one device."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
    from jax.sharding import PartitionSpec as P

    devices = jax.devices()
    assert len(devices) >= 4, devices
    rng = np.random.default_rng(5)
    host = lg.GingerState(
        rng.standard_normal((8, 2)).astype(np.float32),
        np.array([2.0, 1.0], np.float32),
        np.float32(0.5),
        np.float32(0.5),
        np.int32(4),
        np.int32(0),
    )

    def place(mesh):
        rows = NamedSharding(mesh, P("x"))
        rep = NamedSharding(mesh, P())
        return lg.GingerState(*(jax.device_put(v, rows if np.ndim(v) == 2 else rep) for v in host))

    mesh4, mesh2 = Mesh(np.array(devices[:4]), ("x",)), Mesh(np.array(devices[:2]), ("x",))
    on4 = place(mesh4)
    assert len(on4.basis.sharding.device_set) == 4
    path = lg.save_checkpoint(Path(tmp) / "sharded.npz", {"opt": on4})
    like2 = place(mesh2)
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like2)
    for like in ({"opt": like2}, {"opt": abstract}):
        back = lg.load_checkpoint(path, like=like)["opt"]
        for got, want, ref in zip(back, like2, host, strict=True):
            assert got.sharding == want.sharding, (got.sharding, want.sharding)
            assert _bits(got) == _bits(jnp.asarray(ref))
    one = lg.load_checkpoint(path)["opt"]
    for got, ref in zip(one, host, strict=True):
        assert isinstance(got.sharding, SingleDeviceSharding)
        assert got.sharding.device_set == {devices[0]}
        assert _bits(got) == _bits(jnp.asarray(ref))
    step = jax.jit(lambda s: lg.ginger_update(s, jnp.ones(8, jnp.float32), decay=0.9))
    resumed = step(lg.load_checkpoint(path, like={"opt": like2})["opt"])
    direct = step(like2)
    for a, b in zip(resumed, direct, strict=True):
        assert _bits(a) == _bits(b)


def test_sharded_state_loads_onto_another_mesh(tmp_path):
    """A state sharded over 4 devices loads onto 2 devices (like='s shardings) and onto 1 (no like)."""
    jax = pytest.importorskip("jax")
    if len(jax.devices()) >= 4:
        _sharded_case(tmp_path)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XLA_FLAGS"))}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    script = f"from tests.test_checkpoint import _sharded_case; _sharded_case({str(tmp_path)!r}); print('ok')"
    proc = subprocess.run(  # noqa: S603 - this interpreter on a function of this file
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    report = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert proc.stdout.strip().endswith("ok"), report
