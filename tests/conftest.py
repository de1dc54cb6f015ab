"""Shared fixtures: the ``xp`` backend fixture and hypothesis profiles.

``xp`` is parametrised over numpy, array_api_strict, jax (x64 on), torch (CPU)
and cupy (skipped unless a GPU is visible), each in float32 and float64.
Select backends with ``LOWRANK_GGN_BACKENDS=numpy,torch``; select the
hypothesis profile with ``HYPOTHESIS_PROFILE=ci|dev|thorough`` (default ci,
which is derandomised).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests._backends import BACKEND_NAMES, Backend, make_backend

_SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.differing_executors]
settings.register_profile("ci", max_examples=8, deadline=None, derandomize=True, suppress_health_check=_SUPPRESS)
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=_SUPPRESS)
settings.register_profile("thorough", max_examples=300, deadline=None, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _selected() -> list[str]:
    raw = os.environ.get("LOWRANK_GGN_BACKENDS")
    if not raw:
        return list(BACKEND_NAMES)
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BACKEND_NAMES))
    if unknown:
        msg = f"unknown backends in LOWRANK_GGN_BACKENDS: {unknown}"
        raise ValueError(msg)
    return names


_PARAMS = [
    pytest.param((name, dtype), id=f"{name}-{dtype}", marks=[getattr(pytest.mark, f"backend_{name}")])
    for name in _selected()
    for dtype in ("float64", "float32")
]


@pytest.fixture(params=_PARAMS)
def xp(request: pytest.FixtureRequest) -> Backend:
    """A backend (namespace + dtype + converters); skips when the backend is unavailable."""
    name, dtype = request.param
    return make_backend(name, dtype)


@pytest.fixture(params=[pytest.param(n, id=n) for n in _selected()])
def xp64(request: pytest.FixtureRequest) -> Backend:
    """A backend in float64 only."""
    return make_backend(request.param, "float64")
