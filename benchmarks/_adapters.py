"""Backend adapters for the benchmarks: arrays, synchronisation, timers, copies, Adam, peak memory.

Each adapter exposes the same small interface so that the measurement loop in
``bench.py`` is backend-agnostic:

* ``asarray(np_array)``, ``to_numpy(x)``, ``roll(x, shift)`` (a fresh direction);
* ``timer()``: a context manager whose ``.seconds`` is the elapsed time of the
  work issued inside it (host clock after a synchronisation on CPU backends;
  device events on CUDA);
* ``copy_warm(src, dst) -> dst`` (a copy into an already-touched buffer: the
  memory bandwidth) and ``copy_fresh(src)`` (a copy into a new allocation);
* ``adam()``: the backend's own Adam step on ``dim`` parameters;
* ``jit(fn, donate)``: ``jax.jit`` on JAX, identity elsewhere;
* ``peak(fn)``: peak memory allocated while ``fn`` runs, beyond what was
  allocated before (bytes), or ``None`` when this backend cannot measure it.
"""

from __future__ import annotations

import contextlib
import importlib
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS = 1e-3, 0.9, 0.999, 1e-8


class _Timer:
    seconds: float = float("nan")


def _rss_bytes(field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process in bytes (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class NumpyAdapter:
    name = "numpy"
    memory_method = "tracemalloc"

    def __init__(self, dtype: str, device: str | None = None) -> None:
        self.module = np
        self.dtype = np.dtype(dtype)
        self.device = device

    def asarray(self, x: np.ndarray) -> Any:
        return np.array(x, dtype=self.dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def empty_like(self, x: Any) -> Any:
        out = np.empty_like(x)
        out[...] = 0  # touch the pages
        return out

    def roll(self, x: Any, shift: int) -> Any:
        return np.roll(x, shift)

    def sync(self, x: Any) -> Any:
        return x

    @contextlib.contextmanager
    def timer(self) -> Iterator[_Timer]:
        t = _Timer()
        t0 = time.perf_counter()
        yield t
        t.seconds = time.perf_counter() - t0

    def copy_warm(self, src: Any, dst: Any) -> Any:
        np.copyto(dst, src)
        return dst

    def copy_fresh(self, src: Any) -> Any:
        return src.copy()

    def jit(self, fn: Callable[..., Any], donate: tuple[int, ...] = ()) -> Callable[..., Any]:  # noqa: ARG002
        return fn

    def adam(self, dim: int) -> Callable[[Any], None]:
        """A NumPy Adam step written with in-place ufuncs and one scratch vector."""
        rng = np.random.default_rng(0)
        p = rng.standard_normal(dim).astype(self.dtype)
        m, v, tmp = (np.zeros(dim, self.dtype) for _ in range(3))
        t = [0]

        def step(g: Any) -> None:
            t[0] += 1
            bc1, bc2 = 1 - ADAM_B1 ** t[0], 1 - ADAM_B2 ** t[0]
            np.multiply(m, ADAM_B1, out=m)
            np.multiply(g, 1 - ADAM_B1, out=tmp)
            np.add(m, tmp, out=m)
            np.multiply(v, ADAM_B2, out=v)
            np.multiply(g, g, out=tmp)
            np.multiply(tmp, 1 - ADAM_B2, out=tmp)
            np.add(v, tmp, out=v)
            np.sqrt(v, out=tmp)
            np.multiply(tmp, 1 / np.sqrt(bc2), out=tmp)
            np.add(tmp, ADAM_EPS, out=tmp)
            np.divide(m, tmp, out=tmp)
            np.multiply(tmp, ADAM_LR / bc1, out=tmp)
            np.subtract(p, tmp, out=p)

        return step

    def available_memory(self) -> int | None:
        """Bytes this backend's arrays can still use (host MemAvailable on CPU backends)."""
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def peak(self, fn: Callable[[], Any]) -> int | None:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            out = fn()
            _, peak = tracemalloc.get_traced_memory()
            del out
        finally:
            tracemalloc.stop()
        return peak - before


class JaxAdapter(NumpyAdapter):
    name = "jax"
    memory_method = "XLA memory_analysis"

    def __init__(self, dtype: str, device: str | None = None) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        self.jax = jax
        self.module = importlib.import_module("jax.numpy")
        self.dtype = np.dtype(dtype)
        self.device = jax.devices(device)[0] if device else jax.devices()[0]
        # A copy of ``x`` into the donated buffer of ``dst`` (keep_unused: an unused argument
        # would be pruned and its buffer not donated). Scaling ``dst`` in place instead would
        # read and write the same lines, which costs less than a copy (no write-allocate
        # traffic for a separate destination): about 1.7× the bandwidth of a copy on a CPU.
        self._copy = jax.jit(lambda x, dst, s: x * s, donate_argnums=1, keep_unused=True)  # noqa: ARG005
        self._copy_fresh = jax.jit(lambda x, s: x * s)
        self._roll = jax.jit(self.module.roll)
        self._one = jax.device_put(np.asarray(1.0, self.dtype), self.device)

    def asarray(self, x: np.ndarray) -> Any:
        return self.jax.device_put(np.asarray(x, dtype=self.dtype), self.device)

    def empty_like(self, x: Any) -> Any:
        return self.module.zeros_like(x)

    def roll(self, x: Any, shift: int) -> Any:
        return self._roll(x, shift)

    def sync(self, x: Any) -> Any:
        return self.jax.block_until_ready(x)

    def copy_warm(self, src: Any, dst: Any) -> Any:
        # ``dst`` is donated and its buffer receives ``src · 1``: one read of src, one write of dst.
        return self.sync(self._copy(src, dst, self._one))

    def copy_fresh(self, src: Any) -> Any:
        return self.sync(self._copy_fresh(src, self._one))

    def jit(self, fn: Callable[..., Any], donate: tuple[int, ...] = ()) -> Callable[..., Any]:
        return self.jax.jit(fn, donate_argnums=donate)

    def adam(self, dim: int) -> Callable[[Any], None]:
        import optax

        jnp = self.module
        opt = optax.adam(ADAM_LR, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS)
        params = self.asarray(np.random.default_rng(0).standard_normal(dim))
        state = [params, opt.init(params)]

        def _step(p: Any, s: Any, g: Any) -> Any:
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s

        step_jit = self.jax.jit(_step, donate_argnums=(0, 1))
        del jnp

        def step(g: Any) -> None:
            state[0], state[1] = self.sync(step_jit(state[0], state[1], g))

        return step

    def available_memory(self) -> int | None:
        if self.device.platform == "cpu":
            return super().available_memory()
        stats = self.device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return None

    def peak(self, fn: Callable[[], Any]) -> int | None:  # noqa: ARG002
        return None  # measured from the compiled executable instead (see memory_of)

    def memory_of(self, jitted: Callable[..., Any], *args: Any, **kwargs: Any) -> int | None:
        """Bytes beyond the arguments: outputs not aliased to a donated input, plus temporaries."""
        try:
            analysis = jitted.lower(*args, **kwargs).compile().memory_analysis()
        except (AttributeError, NotImplementedError, RuntimeError):
            return None
        if analysis is None:
            return None
        return int(analysis.output_size_in_bytes + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


class TorchAdapter(NumpyAdapter):
    name = "torch"

    def __init__(self, dtype: str, device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.module = torch
        self.dtype_name = dtype
        self.tdtype = getattr(torch, dtype)
        self.dtype = np.dtype(dtype)
        self.device = torch.device(device or "cpu")
        self.cuda = self.device.type == "cuda"
        self.memory_method = "torch.cuda.max_memory_allocated" if self.cuda else "RSS high-water mark"

    def asarray(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(np.array(x, dtype=self.dtype)).to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def empty_like(self, x: Any) -> Any:
        return self.torch.zeros_like(x)

    def roll(self, x: Any, shift: int) -> Any:
        return self.torch.roll(x, shift)

    def sync(self, x: Any) -> Any:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        return x

    @contextlib.contextmanager
    def timer(self) -> Iterator[_Timer]:
        t = _Timer()
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            yield t
            end.record()
            end.synchronize()
            t.seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            yield t
            t.seconds = time.perf_counter() - t0

    def copy_warm(self, src: Any, dst: Any) -> Any:
        return dst.copy_(src)

    def copy_fresh(self, src: Any) -> Any:
        return src.clone()

    def adam(self, dim: int) -> Callable[[Any], None]:
        torch = self.torch
        p = torch.nn.Parameter(self.asarray(np.random.default_rng(0).standard_normal(dim)))
        try:
            opt = torch.optim.Adam([p], lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS, fused=True)
            p.grad = torch.zeros_like(p)
            opt.step()
        except (RuntimeError, TypeError):
            opt = torch.optim.Adam([p], lr=ADAM_LR, betas=(ADAM_B1, ADAM_B2), eps=ADAM_EPS)

        def step(g: Any) -> None:
            p.grad = g
            opt.step()

        return step

    def available_memory(self) -> int | None:
        if self.cuda:
            free, _ = self.torch.cuda.mem_get_info(self.device)
            return int(free)
        return super().available_memory()

    def peak(self, fn: Callable[[], Any]) -> int | None:
        if self.cuda:
            torch = self.torch
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            out = fn()
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            del out
            return peak - before
        before = _rss_bytes("VmRSS")
        if before is None or not _reset_rss_peak():
            return None
        out = fn()
        peak = _rss_bytes("VmHWM")
        del out
        return None if peak is None else peak - before


class CupyAdapter(NumpyAdapter):
    name = "cupy"
    memory_method = "CuPy memory pool"

    def __init__(self, dtype: str, device: str | None = None) -> None:
        import cupy

        if not cupy.cuda.is_available():
            msg = "CuPy is installed but no CUDA device is visible"
            raise RuntimeError(msg)
        self.cp = cupy
        self.module = cupy
        self.dtype = np.dtype(dtype)
        self.device = device

    def asarray(self, x: np.ndarray) -> Any:
        return self.cp.asarray(np.asarray(x, dtype=self.dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.cp.asnumpy(x)

    def empty_like(self, x: Any) -> Any:
        return self.cp.zeros_like(x)

    def roll(self, x: Any, shift: int) -> Any:
        return self.cp.roll(x, shift)

    def sync(self, x: Any) -> Any:
        self.cp.cuda.Device().synchronize()
        return x

    @contextlib.contextmanager
    def timer(self) -> Iterator[_Timer]:
        t = _Timer()
        start, end = self.cp.cuda.Event(), self.cp.cuda.Event()
        start.record()
        yield t
        end.record()
        end.synchronize()
        t.seconds = self.cp.cuda.get_elapsed_time(start, end) / 1e3

    def copy_warm(self, src: Any, dst: Any) -> Any:
        self.cp.copyto(dst, src)
        return dst

    def copy_fresh(self, src: Any) -> Any:
        return src.copy()

    def adam(self, dim: int) -> Callable[[Any], None]:
        cp = self.cp
        kernel = cp.ElementwiseKernel(
            "T g, T lr, T b1, T b2, T eps, T bc1, T bc2",
            "T p, T m, T v",
            "m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g;p -= lr * (m / bc1) / (sqrt(v / bc2) + eps);",
            "lowrank_ggn_bench_adam",
        )
        p = self.asarray(np.random.default_rng(0).standard_normal(dim))
        m, v = cp.zeros_like(p), cp.zeros_like(p)
        t = [0]

        def step(g: Any) -> None:
            t[0] += 1
            kernel(g, ADAM_LR, ADAM_B1, ADAM_B2, ADAM_EPS, 1 - ADAM_B1 ** t[0], 1 - ADAM_B2 ** t[0], p, m, v)

        return step

    def available_memory(self) -> int | None:
        free, _ = self.cp.cuda.Device().mem_info
        return int(free + self.cp.get_default_memory_pool().free_bytes())

    def peak(self, fn: Callable[[], Any]) -> int | None:
        pool = self.cp.get_default_memory_pool()
        self.sync(None)
        pool.free_all_blocks()
        before = pool.used_bytes()
        # The pool has no peak counter: sample total bytes held right after the call,
        # which bounds the live temporaries from below (freed blocks stay in the pool).
        out = fn()
        self.sync(None)
        held = pool.total_bytes()
        del out
        return held - before


ADAPTERS = {"numpy": NumpyAdapter, "jax": JaxAdapter, "torch": TorchAdapter, "cupy": CupyAdapter}


def make_adapter(name: str, dtype: str, device: str | None = None) -> Any:
    """Build the adapter for a backend name; raises ImportError/RuntimeError when unavailable."""
    return ADAPTERS[name](dtype, device)
