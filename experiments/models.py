"""The two models of the reproduction, in plain JAX (parameters are dicts of arrays).

- ``mlp``: two hidden layers of 128 ReLU units.
- ``cnn``: a small residual network for 8×8 images, after ResNet (He et al.,
  2016) without batch normalisation: a 3×3 stem with 8 channels, one residual
  block at 8×8, a strided 3×3 convolution to 16 channels at 4×4, one residual
  block at 4×4, global average pooling and a linear classifier. Residual
  blocks are ``relu(x + conv(relu(conv(x))))``; the second convolution of
  each block is initialised at 0.1 × the He scale, so that the initial
  network stays close to its skip path.

Convolutions are im2col matrix products: under ``jax.vmap`` (used to train
several learning rates and seeds at once) they stay batched matmuls, whereas
a vmapped ``lax.conv`` becomes a grouped convolution, about 20× slower on CPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["MODELS", "init_model"]

MODELS = ("mlp", "cnn")
Params = dict[str, jax.Array]


def _dense(key: jax.Array, n_in: int, n_out: int, scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) * jnp.sqrt(2.0 / n_in) * scale
    return w, jnp.zeros((n_out,), jnp.float32)


def _conv_init(key: jax.Array, c_in: int, c_out: int, scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    w = jax.random.normal(key, (3, 3, c_in, c_out), jnp.float32) * jnp.sqrt(2.0 / (9 * c_in)) * scale
    return w, jnp.zeros((c_out,), jnp.float32)


def conv3x3(x: jax.Array, w: jax.Array, b: jax.Array, stride: int = 1) -> jax.Array:
    """Convolve NHWC ``x`` with the HWIO 3×3 kernel ``w`` ('SAME' padding) as one im2col matrix product."""
    h, wd = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = [xp[:, i : i + h : stride, j : j + wd : stride, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(patches, axis=-1) @ jnp.reshape(w, (-1, w.shape[-1])) + b


def _mlp_init(key: jax.Array, n_in: int, n_out: int, width: int = 128) -> Params:
    k1, k2, k3 = jax.random.split(key, 3)
    p: Params = {}
    p["w1"], p["b1"] = _dense(k1, n_in, width)
    p["w2"], p["b2"] = _dense(k2, width, width)
    p["w3"], p["b3"] = _dense(k3, width, n_out, scale=0.5)
    return p


def _mlp_apply(p: Params, x: jax.Array) -> jax.Array:
    x = jnp.reshape(x, (x.shape[0], -1))
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]


def _cnn_init(key: jax.Array, n_out: int, c1: int = 8, c2: int = 16) -> Params:
    ks = jax.random.split(key, 7)
    p: Params = {}
    p["stem_w"], p["stem_b"] = _conv_init(ks[0], 1, c1)
    p["r1a_w"], p["r1a_b"] = _conv_init(ks[1], c1, c1)
    p["r1b_w"], p["r1b_b"] = _conv_init(ks[2], c1, c1, scale=0.1)
    p["down_w"], p["down_b"] = _conv_init(ks[3], c1, c2)
    p["r2a_w"], p["r2a_b"] = _conv_init(ks[4], c2, c2)
    p["r2b_w"], p["r2b_b"] = _conv_init(ks[5], c2, c2, scale=0.1)
    p["fc_w"], p["fc_b"] = _dense(ks[6], c2, n_out, scale=0.5)
    return p


def _cnn_apply(p: Params, x: jax.Array) -> jax.Array:
    h = jax.nn.relu(conv3x3(x, p["stem_w"], p["stem_b"]))
    h = jax.nn.relu(h + conv3x3(jax.nn.relu(conv3x3(h, p["r1a_w"], p["r1a_b"])), p["r1b_w"], p["r1b_b"]))
    h = jax.nn.relu(conv3x3(h, p["down_w"], p["down_b"], stride=2))
    h = jax.nn.relu(h + conv3x3(jax.nn.relu(conv3x3(h, p["r2a_w"], p["r2a_b"])), p["r2b_w"], p["r2b_b"]))
    return jnp.mean(h, axis=(1, 2)) @ p["fc_w"] + p["fc_b"]


def init_model(
    name: str, key: jax.Array, input_shape: tuple[int, ...], n_out: int
) -> tuple[Params, Callable[[Params, jax.Array], jax.Array]]:
    """Return initial parameters and ``apply(params, x) -> outputs`` for a model."""
    if name == "mlp":
        n_in = 1
        for s in input_shape:
            n_in *= s
        return _mlp_init(key, n_in, n_out), _mlp_apply
    if name == "cnn":
        if len(input_shape) != 3:
            msg = "the CNN needs image inputs (H, W, C)"
            raise ValueError(msg)
        return _cnn_init(key, n_out), _cnn_apply
    if name == "ae":
        return _ae_init(key, input_shape[-1]), _ae_apply
    msg = f"unknown model {name!r}; choose from {MODELS} or 'ae'"
    raise ValueError(msg)


AE_WIDTHS = (48, 24, 8, 24, 48)
"""Hidden widths of the deep autoencoder (tanh; linear code and output layers are tanh/linear as below)."""


def _ae_init(key: jax.Array, n_in: int) -> Params:
    widths = (n_in, *AE_WIDTHS, n_in)
    keys = jax.random.split(key, len(widths) - 1)
    p: Params = {}
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        w = jax.random.normal(keys[i], (a, b), jnp.float32) * jnp.sqrt(1.0 / a)  # LeCun scale for tanh
        p[f"w{i}"], p[f"b{i}"] = w, jnp.zeros((b,), jnp.float32)
    return p


def _ae_apply(p: Params, x: jax.Array) -> jax.Array:
    """Apply the digits deep autoencoder 64-48-24-8-24-48-64: tanh hidden layers, linear output."""
    h = jnp.reshape(x, (x.shape[0], -1))
    n = len(AE_WIDTHS) + 1
    for i in range(n):
        h = h @ p[f"w{i}"] + p[f"b{i}"]
        if i < n - 1:
            h = jnp.tanh(h)
    return h


def num_params(params: Any) -> int:
    """Count the scalar parameters."""
    return sum(int(x.size) for x in jax.tree.leaves(params))
