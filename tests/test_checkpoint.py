"""Checkpoints: bit-exact round trips on every backend, resumed trajectories, damaged and mismatched files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import lowrank_ggn as lg
from lowrank_ggn.backends import array_namespace, to_host_exact
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
        assert manifest["version"] == 1
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


def _rewrite_manifest(path, edit):
    with np.load(path) as z:
        members = {k: z[k] for k in z.files}
    manifest = json.loads(bytes(members["__manifest__"]).decode())
    edit(manifest, members)
    members["__manifest__"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    with path.open("wb") as f:
        np.savez(f, **members)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m, a: m.update(version=2), "newer"),
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
