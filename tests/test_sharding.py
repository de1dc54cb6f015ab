"""Sharded Ginger and QNG on 8 simulated JAX devices, and the HLO reader that checks their communication.

XLA fixes the number of simulated CPU devices when JAX starts, and other test
modules start JAX with one device; so the sharded tests
(``tests/_sharding_cases.py``) run in a fresh ``pytest`` process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax")

from lowrank_ggn.sharding import collectives

ROOT = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XLA_FLAGS"))}
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def test_shard_suite_on_8_simulated_devices(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "tests" / "_sharding_cases.py"),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={tmp_path / 'inner'}",
        "--rootdir",
        str(ROOT),
    ]
    proc = subprocess.run(  # noqa: S603 - runs this interpreter on a file of the repository
        cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=900, check=False
    )
    report = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, f"the sharded tests failed:\n{report}"
    assert " passed" in proc.stdout
    assert "skipped" not in proc.stdout.splitlines()[-1], report


# -- The HLO reader, on programs written by hand ------------------------------------------

_HLO = """\
HloModule jit_step, entry_computation_layout={(f32[128,8]{1,0})->f32[128,8]{1,0}}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add = f32[] add(%x, %y)
}

%branch_again (p: (f32[8], f32[128])) -> (f32[8], f32[128]) {
  %p = (f32[8], f32[128]) parameter(0)
  %all-reduce.3 = f32[8]{0} all-reduce(%gte), channel_id=3, replica_groups=[1,8]<=[8], to_apply=%add
  ROOT %t = (f32[8], f32[128]) tuple(%all-reduce.3, %gte2)
}

%branch_keep (q: (f32[8], f32[128])) -> (f32[8], f32[128]) {
  ROOT %q = (f32[8], f32[128]) parameter(0)
}

%body (b: (s32[], f32[4])) -> (s32[], f32[4]) {
  %ag = f32[64,8]{1,0} all-gather(%x), channel_id=4, dimensions={0}, replica_groups=[1,8]<=[8]
  ROOT %r = (s32[], f32[4]) tuple(%i, %v)
}

%cond (c: (s32[], f32[4])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (param: f32[128,8]) -> f32[128,8] {
  %all-reduce = (f32[], f32[8]{0}) all-reduce(%a, %b), channel_id=1, replica_groups=[1,8]<=[8], to_apply=%add
  %all-reduce.1 = pred[] all-reduce(%f), channel_id=2, replica_groups=[1,8]<=[8], to_apply=%and
  %conditional = (f32[8]{0}, f32[128]{0}) conditional(%p, %t1, %t2), branch_computations={%branch_again, %branch_keep}
  %while = (s32[], f32[4]) while(%init), condition=%cond, body=%body
  %ars = f32[32]{0} all-reduce-start(%z), channel_id=5, to_apply=%add
  %ard = f32[32]{0} all-reduce-done(%ars)
  ROOT %out = f32[128,8]{1,0} copy(%param)
}
"""


def test_shard_collectives_reader_on_hand_written_hlo():
    found = collectives(_HLO)
    assert [(c.kind, c.nbytes, c.in_loop, c.in_conditional) for c in found] == [
        ("all-reduce", 8 * 4, False, True),
        ("all-gather", 64 * 8 * 4, True, False),
        ("all-reduce", 4 + 8 * 4, False, False),
        ("all-reduce", 1, False, False),
        ("all-reduce", 32 * 4, False, False),
    ]
    assert found[2].shapes == (("f32", ()), ("f32", (8,)))
    assert found[0].computation == "branch_again"


def test_shard_collectives_reader_on_a_single_device_program():
    import jax
    import jax.numpy as jnp

    import lowrank_ggn as lg

    state = lg.ginger_init(16, 2, xp=jnp, dtype=jnp.float32)
    compiled = (
        jax.jit(lambda s, d: lg.ginger_update(s, d, decay=0.5)).lower(state, jnp.ones(16, dtype=jnp.float32)).compile()
    )
    assert collectives(compiled) == []
    assert collectives(compiled.as_text()) == []


def test_shard_collectives_reader_rejects_unknown_element_types():
    with pytest.raises(ValueError, match="unknown HLO element type"):
        collectives("ENTRY %m () -> q7[] {\n  %a = q7[4] all-reduce(%x), to_apply=%add\n}\n")


@pytest.mark.slow
def test_sharding_report_script(tmp_path):
    out = tmp_path / "table.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sharding_report.py"), "--dim", str(2**16), "--rank", "8"]
    proc = subprocess.run(  # noqa: S603 - runs this interpreter on a file of the repository
        [*cmd, "--out", str(out)], cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    text = out.read_text(encoding="utf-8")
    assert "| Ginger step | 8 |" in text
    assert "all-gather" in text  # the contrast: the QR of an auto-sharded U gathers it
