"""Ginger and QNG split across torch.distributed processes (gloo, loopback) equal the single-process result.

Three ranks hold uneven blocks of the parameters (8, 8 and 7 of 23). The stream
of curvature vectors exercises every branch of the update on all ranks
together: a non-finite entry on one rank only, a zero vector, a vector in
``span U`` and one nearly in it (the second Gram–Schmidt pass), and periodic
re-orthonormalisation.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import lowrank_ggn as lg

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover - builds without distributed support
    pytest.skip("torch.distributed is not available", allow_module_level=True)

import lowrank_ggn.distributed as lgd  # noqa: E402
from tests import _distributed_worker  # noqa: E402

WORLD, DIM, RANK, DECAY, DAMPING, EVERY = 3, 23, 4, 0.9, 1e-2, 5
STEPS, NAN_STEP, ZERO_STEP, SPAN_STEP, NEAR_STEP, PROBE_STEP = 12, 4, 5, 6, 7, 7


def _reference_updates(rng: np.random.Generator) -> tuple[list[np.ndarray], list]:
    """The curvature vectors, with the ones built from the current basis, and the float64 states."""
    state = lg.ginger_init(DIM, RANK, xp=torch, dtype=torch.float64)
    ds, states = [], []
    for t in range(STEPS):
        u = state.basis.numpy()
        if t == NAN_STEP:
            d = rng.standard_normal(DIM)
            d[10] = np.nan  # on the second rank's block only
        elif t == ZERO_STEP:
            d = np.zeros(DIM)
        elif t == SPAN_STEP:
            d = u @ rng.standard_normal(RANK)
        elif t == NEAR_STEP:
            d = u @ rng.standard_normal(RANK) + 1e-3 * rng.standard_normal(DIM)
        else:
            d = rng.standard_normal(DIM) * np.geomspace(1.0, 1e-2, DIM)
        ds.append(d)
        state = lg.ginger_update(state, torch.from_numpy(d), decay=DECAY, reorthonormalize_every=EVERY)
        states.append(state)
    return ds, states


def _spawn(out_dir):
    """Spawn the ranks; return the case they ran and the single-process reference states."""
    rng = np.random.default_rng(20240611)
    ginger_d, ref_states = _reference_updates(rng)
    case = {
        "dim": DIM,
        "rank": RANK,
        "decay": DECAY,
        "damping": DAMPING,
        "every": EVERY,
        "probe_step": PROBE_STEP,
        "ginger_d": ginger_d,
        "qng_d": [rng.standard_normal(DIM) for _ in range(RANK + 2)],
        "g": rng.standard_normal(DIM),
        "g2": rng.standard_normal((DIM, 3)),
    }
    if not (out_dir / "done").exists():
        torch.multiprocessing.spawn(
            _distributed_worker.run,
            args=(WORLD, str(out_dir / "store"), str(out_dir), case),
            nprocs=WORLD,
            join=True,
        )
        (out_dir / "done").touch()
    return case, ref_states


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """The ranks' outputs and the single-process reference.

    The ranks run once per test session: under pytest-xdist the first worker to
    get here spawns them and the others wait for its files.
    """
    filelock = pytest.importorskip("filelock")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the base directory common to all workers
    out_dir = shared / "distributed_ranks"
    out_dir.mkdir(exist_ok=True)
    with filelock.FileLock(str(out_dir) + ".lock"):
        case, ref_states = _spawn(out_dir)
    ranks = []
    for k in range(WORLD):
        with np.load(out_dir / f"rank{k}.npz") as f:
            ranks.append(dict(f))
    return case, ref_states, ranks


def _blocks(ranks, key, axis=0):
    return np.concatenate([r[key] for r in ranks], axis=axis).astype(np.float64)


def _dense(basis, eigvals):
    return (basis * eigvals) @ basis.T


def _tol(dtype, factor):
    return factor * float(np.finfo(dtype).eps)


def test_distributed_blocks_are_an_even_contiguous_split(run):
    _, _, ranks = run
    bounds = [tuple(r["slice"]) for r in ranks]
    assert bounds == [(0, 8), (8, 16), (16, 23)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_init_is_the_identity_split_in_blocks(run, dtype):
    _, _, ranks = run
    np.testing.assert_array_equal(_blocks(ranks, f"{dtype}/init_basis"), np.eye(DIM, RANK))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_replicated_fields_are_identical_on_every_rank(run, dtype):
    _, _, ranks = run
    for prefix, fields in (
        ("ginger", ("eigvals", "discarded", "step", "num_nonfinite")),
        ("qng", ("betas", "scales", "sqnorms", "step")),
    ):
        for field in fields:
            key = f"{dtype}/{prefix}/{field}"
            for r in ranks[1:]:
                np.testing.assert_array_equal(r[key], ranks[0][key], err_msg=key)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_ginger_equals_single_process(run, dtype):
    case, ref_states, ranks = run
    ref = ref_states[-1]
    u_ref, s_ref = ref.basis.numpy(), ref.eigvals.numpy()
    m_ref = _dense(u_ref, s_ref)
    u = _blocks(ranks, f"{dtype}/ginger/basis")
    s = ranks[0][f"{dtype}/ginger/eigvals"].astype(np.float64)
    scale = np.abs(m_ref).max()
    assert np.abs(_dense(u, s) - m_ref).max() <= _tol(dtype, 100) * scale
    np.testing.assert_allclose(s, s_ref, rtol=_tol(dtype, 100), atol=_tol(dtype, 100) * s_ref[0])
    assert np.abs(u.T @ u - np.eye(RANK)).max() <= _tol(dtype, 20)
    assert int(ranks[0][f"{dtype}/ginger/step"]) == int(ref.step) == STEPS - 1
    assert int(ranks[0][f"{dtype}/ginger/num_nonfinite"]) == int(ref.num_nonfinite) == 1
    discarded = float(ranks[0][f"{dtype}/ginger/discarded"])
    assert discarded == pytest.approx(float(ref.discarded), rel=_tol(dtype, 100), abs=_tol(dtype, 100) * scale)

    # The query, on a vector and on a batch of vectors.
    for key, g in (("ginger_y", case["g"]), ("ginger_y2", case["g2"])):
        y_ref = lg.ginger_precondition(ref, torch.from_numpy(g), damping=DAMPING).numpy()
        y = _blocks(ranks, f"{dtype}/{key}")
        assert np.abs(y - y_ref).max() <= _tol(dtype, 100) * np.abs(y_ref).max()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_ginger_in_span_step_rotates_only(run, dtype):
    """The step with ``d`` nearly in ``span U`` (second Gram–Schmidt pass) matches the reference too."""
    _, ref_states, ranks = run
    ref = ref_states[PROBE_STEP]
    m_ref = _dense(ref.basis.numpy(), ref.eigvals.numpy())
    u = _blocks(ranks, f"{dtype}/probe/basis")
    s = ranks[0][f"{dtype}/probe/eigvals"].astype(np.float64)
    assert np.abs(_dense(u, s) - m_ref).max() <= _tol(dtype, 100) * np.abs(m_ref).max()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_reorthonormalize_keeps_the_matrix(run, dtype):
    _, _, ranks = run
    u0 = _blocks(ranks, f"{dtype}/ginger/basis")
    s0 = ranks[0][f"{dtype}/ginger/eigvals"].astype(np.float64)
    u = _blocks(ranks, f"{dtype}/reorth/basis")
    s = ranks[0][f"{dtype}/reorth/eigvals"].astype(np.float64)
    m0 = _dense(u0, s0)
    assert np.abs(_dense(u, s) - m0).max() <= _tol(dtype, 20) * np.abs(m0).max()
    assert np.abs(u.T @ u - np.eye(RANK)).max() <= _tol(dtype, 20)
    assert np.all(np.diff(s) <= 0)
    assert np.all(s >= 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_qng_equals_single_process(run, dtype):
    case, _, ranks = run
    q = lg.qng_init(DIM, RANK, xp=torch, dtype=torch.float64)
    for d in case["qng_d"]:
        q = lg.qng_update(q, torch.from_numpy(d), decay=DECAY)
    f_ref = q.factors.numpy()
    f = _blocks(ranks, f"{dtype}/qng/factors", axis=1)
    assert np.abs(f - f_ref).max() <= _tol(dtype, 50) * np.abs(f_ref).max()
    np.testing.assert_allclose(ranks[0][f"{dtype}/qng/betas"], q.betas.numpy(), rtol=_tol(dtype, 50))
    y_ref = lg.qng_precondition(q, torch.from_numpy(case["g"])).numpy()
    y = _blocks(ranks, f"{dtype}/qng_y")
    assert np.abs(y - y_ref).max() <= _tol(dtype, 50) * np.abs(y_ref).max()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distributed_generic_fused_step_equals_single_process(run, dtype):
    """lgd.update_precondition(approximation, ...) against the protocol's own fused step on the whole vector."""
    case, _, ranks = run
    g = torch.from_numpy(case["g"])
    ginger = lg.ginger(rank=RANK, decay=DECAY, reorthonormalize_every=EVERY)
    state = ginger.init(DIM, xp=torch, dtype=torch.float64)
    for d in case["ginger_d"]:
        state, y_ref = ginger.update_precondition(state, torch.from_numpy(d), g, damping=DAMPING)
    m_ref = _dense(state.basis.numpy(), state.eigvals.numpy())
    m = _dense(_blocks(ranks, f"{dtype}/fused/basis"), ranks[0][f"{dtype}/fused/eigvals"].astype(np.float64))
    assert np.abs(m - m_ref).max() <= _tol(dtype, 100) * np.abs(m_ref).max()
    y = _blocks(ranks, f"{dtype}/fused/y")
    assert np.abs(y - y_ref.numpy()).max() <= _tol(dtype, 100) * np.abs(y_ref.numpy()).max()

    qng = lg.qng(rank=RANK, decay=DECAY)
    q = qng.init(DIM, xp=torch, dtype=torch.float64)
    for d in case["qng_d"]:
        q, qy_ref = qng.update_precondition(q, torch.from_numpy(d), g)
    qy = _blocks(ranks, f"{dtype}/fused/qng_y")
    assert np.abs(qy - qy_ref.numpy()).max() <= _tol(dtype, 50) * np.abs(qy_ref.numpy()).max()


def test_distributed_generic_step_rejects_the_product_form():
    with pytest.raises(ValueError, match="cannot be split"):
        lgd.update_precondition(lg.ginger_product(rank=2, decay=0.9), None, None, None, damping=1.0)


def test_distributed_functions_need_an_initialised_process_group():
    if dist.is_initialized():  # pragma: no cover - only when the caller started one
        pytest.skip("a process group is already initialised in this process")
    state = lg.ginger_init(8, 2, xp=torch)
    with pytest.raises(RuntimeError, match="init_process_group"):
        lgd.ginger_update(state, torch.ones(8, dtype=state.basis.dtype), decay=0.9)
    with pytest.raises(RuntimeError, match="init_process_group"):
        lgd.ginger_init(8, 2)
    with pytest.raises(RuntimeError, match="init_process_group"):
        lgd.local_slice(8)


def test_distributed_functions_reject_bad_arguments():
    state = lg.ginger_init(8, 2, xp=np)
    with pytest.raises(TypeError, match=r"state\.basis must be a torch\.Tensor"):
        lgd.ginger_precondition(state, np.ones(8), damping=1.0)
    tstate = lg.ginger_init(8, 2, xp=torch)
    with pytest.raises(ValueError, match="decay"):
        lgd.ginger_update(tstate, torch.ones(8, dtype=tstate.basis.dtype), decay=1.5)
    with pytest.raises(ValueError, match="d must have shape"):
        lgd.ginger_update(tstate, torch.ones(7, dtype=tstate.basis.dtype), decay=0.5)
    with pytest.raises(ValueError, match="damping"):
        lgd.ginger_precondition(tstate, torch.ones(8, dtype=tstate.basis.dtype), damping=0.0)
