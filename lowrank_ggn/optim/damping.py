r"""Damping policies for the optimisers: fixed, scheduled, Levenberg–Marquardt and escaped-mass.

Every optimiser of :mod:`lowrank_ggn.optim` takes its damping γ as one option,
``damping=``: a number, a schedule ``count -> γ``, or one of the policies of
this module (the same objects on the optax and the torch front-ends):

:func:`fixed`
    γ_t = γ.
:func:`scheduled`
    γ_t = ``schedule(count)``, e.g. an optax schedule.
:func:`levenberg_marquardt`
    γ adapted from the reduction ratio of the previous step (Martens & Grosse,
    2015, §6.5; the rule and defaults of kfac-jax's ``Optimizer``):

    .. math::
       \rho = \frac{L(\theta + \delta) - L(\theta)}{q(\delta)},\qquad
       q(\delta) = g^\top\delta + \tfrac12\,\delta^\top (C + \gamma I)\,\delta,

       \gamma \leftarrow \begin{cases} \omega\,\gamma & \rho > 3/4\\
       \gamma/\omega & \rho < 1/4 \text{ or } \rho \text{ is NaN}\\ \gamma & \text{otherwise,}\end{cases}
       \qquad \gamma \in [\gamma_{\min}, \gamma_{\max}].

    The optimiser does not see the loss, so the caller computes ρ (with
    :func:`quadratic_change` and :func:`reduction_ratio`) and passes it to the
    next step: ``tx.update(..., reduction_ratio=rho)`` (optax) or
    ``optimizer.adapt_damping(rho)`` (torch). Without a ratio γ stays as it is.
:func:`escaped`
    γ_t = γ + c·ε_t per block, with ε_t the block state's ``escaped`` field:
    the curvature mass the truncation to rank τ has dropped, a certificate
    that ``M_t + ε_t I`` dominates the untruncated EMA (Sketchy, Feinberg et
    al. 2023, adds it to the damping). The state is folded first and the
    gradient preconditioned with the damping of the folded state. A state
    without an ``escaped`` field is rejected when the optimiser is built
    (optax) or first stepped (torch), naming the field.

The policies are frozen dataclasses (hashable, picklable: they can sit in a
``torch.optim`` parameter group and its ``state_dict``). A policy's own state
(γ for Levenberg–Marquardt) is a 0-d array in the optax state, a Python float
in the torch parameter group.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

from lowrank_ggn._core.checks import check_damping

__all__ = [
    "DampingPolicy",
    "Escaped",
    "Fixed",
    "LevenbergMarquardt",
    "Scheduled",
    "escaped",
    "fixed",
    "levenberg_marquardt",
    "quadratic_change",
    "reduction_ratio",
    "scheduled",
]


class DampingPolicy:
    """Base class of the damping policies (see the module docstring).

    Attributes
    ----------
    needs_state : bool
        Whether the damping of a block depends on its curvature state (then
        the front-ends fold before they precondition).
    adaptive : bool
        Whether :meth:`adapt` changes the policy's state.
    """

    needs_state: bool = False
    adaptive: bool = False

    def init(self) -> float:
        """Return the policy's initial state.

        Returns
        -------
        float
            γ₀ for Levenberg–Marquardt, 0 for the others.
        """
        return 0.0

    def damping(self, policy_state: Any, count: Any) -> Any:
        """Return the damping before any per-block term, at step ``count``.

        Parameters
        ----------
        policy_state : float or 0-d array
            The policy's state (:meth:`init`, then :meth:`adapt`).
        count : int or 0-d array
            The step count.

        Returns
        -------
        float or 0-d array
            γ_t.
        """
        raise NotImplementedError  # pragma: no cover

    def block_damping(self, gamma: Any, block_state: Any) -> Any:
        """Return the damping of one block whose (folded) state is ``block_state``.

        Parameters
        ----------
        gamma : float or 0-d array
            The damping of :meth:`damping`.
        block_state : NamedTuple or None
            The block's approximation state (None for a scalar block).

        Returns
        -------
        float or 0-d array
            The block's γ.
        """
        del block_state
        return gamma

    def check_state_type(self, state_type: type) -> None:
        """Check that the policy can use states of ``state_type``.

        Parameters
        ----------
        state_type : type
            The NamedTuple class of the approximation's states.

        Raises
        ------
        ValueError
            If it cannot.
        """
        del state_type

    def adapt(self, policy_state: Any, ratio: Any) -> Any:
        """Return the policy's state after a step whose reduction ratio was ``ratio``.

        Parameters
        ----------
        policy_state : float or 0-d array
            The policy's state.
        ratio : float, 0-d array or None
            The reduction ratio ρ of the step (:func:`reduction_ratio`).

        Returns
        -------
        float or 0-d array
            The new state (unchanged for non-adaptive policies).
        """
        del ratio
        return policy_state


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{name} must be a real number, got {type(value).__name__}"
        raise TypeError(msg)
    check_damping(float(value), name)
    return float(value)


@dataclasses.dataclass(frozen=True)
class Fixed(DampingPolicy):
    """The fixed damping γ_t = γ (built by :func:`fixed`).

    Parameters
    ----------
    value : float
        γ > 0.
    """

    value: float

    def damping(self, policy_state: Any, count: Any) -> Any:
        del policy_state, count
        return self.value


@dataclasses.dataclass(frozen=True)
class Scheduled(DampingPolicy):
    """The scheduled damping γ_t = ``schedule(count)`` (built by :func:`scheduled`).

    Parameters
    ----------
    schedule : callable
        ``count -> γ``.
    """

    schedule: Callable[[Any], Any]

    def damping(self, policy_state: Any, count: Any) -> Any:
        del policy_state
        return self.schedule(count)


@dataclasses.dataclass(frozen=True)
class LevenbergMarquardt(DampingPolicy):
    """The Levenberg–Marquardt damping, adapted from the reduction ratio (built by :func:`levenberg_marquardt`).

    Parameters
    ----------
    initial, factor, lower, upper, min_damping, max_damping : float
        As in :func:`levenberg_marquardt`.
    """

    initial: float
    factor: float
    lower: float
    upper: float
    min_damping: float
    max_damping: float
    adaptive = True

    def init(self) -> float:
        return self.initial

    def damping(self, policy_state: Any, count: Any) -> Any:
        del count
        return policy_state

    def adapt(self, policy_state: Any, ratio: Any) -> Any:
        """Return γ after a step of reduction ratio ``ratio`` (``None``: unchanged).

        A NaN ratio counts as a failed step (γ grows), as in kfac-jax. Works on
        Python floats and on 0-d arrays of any namespace (traceable under
        ``jax.jit``: no Python branch on values).

        Parameters
        ----------
        policy_state : float or 0-d array
            The current γ.
        ratio : float, 0-d array or None
            The reduction ratio ρ of the step.

        Returns
        -------
        float or 0-d array
            γ multiplied by ``factor`` after a good step, divided by it after a poor one, clipped to the bounds.
        """
        if ratio is None:
            return policy_state
        if isinstance(ratio, numbers.Real) and isinstance(policy_state, numbers.Real):
            r = -100.0 if math.isnan(ratio) else float(ratio)
            g = float(policy_state)
            g = g * self.factor if r > self.upper else (g / self.factor if r < self.lower else g)
            return min(max(g, self.min_damping), self.max_damping)
        from lowrank_ggn.backends import array_namespace

        xp = array_namespace(ratio if not isinstance(ratio, numbers.Real) else policy_state)
        r = xp.asarray(ratio)
        gam = xp.asarray(policy_state)
        r = xp.where(xp.isnan(r), xp.asarray(-100.0, dtype=r.dtype), r)
        new = xp.where(r > self.upper, gam * self.factor, xp.where(r < self.lower, gam / self.factor, gam))
        return xp.clip(new, self.min_damping, self.max_damping)


@dataclasses.dataclass(frozen=True)
class Escaped(DampingPolicy):
    """The escaped-mass damping γ_t = γ + c·ε_t per block (built by :func:`escaped`).

    Parameters
    ----------
    value : float
        γ > 0.
    scale : float
        c > 0.
    """

    value: float
    scale: float
    needs_state = True

    def damping(self, policy_state: Any, count: Any) -> Any:
        del policy_state, count
        return self.value

    def check_state_type(self, state_type: type) -> None:
        fields = getattr(state_type, "_fields", ())
        if "escaped" not in fields:
            msg = (
                f"damping=escaped(...) needs approximation states with an 'escaped' field (the dropped curvature "
                f"mass); {state_type.__name__} has fields {tuple(fields)}"
            )
            raise ValueError(msg)

    def block_damping(self, gamma: Any, block_state: Any) -> Any:
        if block_state is None:  # a scalar block keeps no curvature
            return gamma
        self.check_state_type(type(block_state))
        return gamma + self.scale * block_state.escaped


for _policy in (Fixed, Scheduled, LevenbergMarquardt, Escaped):  # the hooks carry the base class's contract
    for _name, _method in vars(_policy).items():
        if callable(_method) and _method.__doc__ is None and hasattr(DampingPolicy, _name):
            _method.__doc__ = getattr(DampingPolicy, _name).__doc__


def fixed(damping: float) -> Fixed:
    """Return the fixed damping policy γ_t = ``damping`` (the same as passing the number).

    Parameters
    ----------
    damping : float
        γ > 0.

    Returns
    -------
    Fixed
        The policy.

    Raises
    ------
    ValueError, TypeError
        If ``damping`` is not a finite positive number.
    """
    return Fixed(_positive(damping, "damping"))


def scheduled(schedule: Callable[[Any], Any]) -> Scheduled:
    """Return the policy γ_t = ``schedule(count)`` (the same as passing the schedule).

    Parameters
    ----------
    schedule : callable
        ``count -> γ``, positive values.

    Returns
    -------
    Scheduled
        The policy.

    Raises
    ------
    TypeError
        If ``schedule`` is not callable.
    """
    if not callable(schedule):
        msg = f"schedule must be callable count -> damping, got {type(schedule).__name__}"
        raise TypeError(msg)
    return Scheduled(schedule)


def levenberg_marquardt(
    initial: float = 1.0,
    *,
    factor: float = 0.9**5,
    lower: float = 0.25,
    upper: float = 0.75,
    min_damping: float = 1e-8,
    max_damping: float = 1e8,
) -> LevenbergMarquardt:
    """Return the Levenberg–Marquardt adaptive policy (see the module docstring).

    Parameters
    ----------
    initial : float
        γ₀ > 0.
    factor : float
        ω ∈ (0, 1): γ is multiplied by ω after a good step (ρ > ``upper``)
        and divided by it after a poor one (ρ < ``lower``). The default
        0.9⁵ is kfac-jax's ``damping_adaptation_decay ** damping_adaptation_interval``
        (there applied every 5 steps; here at every step a ratio is given).
    lower, upper : float
        Thresholds on ρ, 0 ≤ ``lower`` < ``upper`` (kfac-jax: 0.25, 0.75).
    min_damping, max_damping : float
        Bounds of γ, 0 < ``min_damping`` ≤ ``initial`` ≤ ``max_damping``.

    Returns
    -------
    LevenbergMarquardt
        The policy.

    Raises
    ------
    ValueError, TypeError
        For an invalid option, naming it.
    """
    initial = _positive(initial, "initial")
    min_damping = _positive(min_damping, "min_damping")
    max_damping = _positive(max_damping, "max_damping")
    factor = _positive(factor, "factor")
    if factor >= 1.0:
        msg = f"factor must lie in (0, 1), got {factor!r}"
        raise ValueError(msg)
    for name, v in (("lower", lower), ("upper", upper)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            msg = f"{name} must be a finite real number, got {v!r}"
            raise ValueError(msg)
    if not 0 <= lower < upper:
        msg = f"lower and upper must satisfy 0 <= lower < upper, got lower={lower!r}, upper={upper!r}"
        raise ValueError(msg)
    if not min_damping <= initial <= max_damping:
        msg = f"initial must lie in [min_damping, max_damping] = [{min_damping}, {max_damping}], got {initial}"
        raise ValueError(msg)
    return LevenbergMarquardt(initial, factor, float(lower), float(upper), min_damping, max_damping)


def escaped(damping: float, *, scale: float = 1.0) -> Escaped:
    """Return the escaped-mass policy γ_t = ``damping`` + ``scale`` · ε_t, per block.

    Needs an approximation whose state has an ``escaped`` field (the
    dropped curvature mass); the front-ends reject others, naming it.

    Parameters
    ----------
    damping : float
        γ > 0.
    scale : float
        c > 0, the multiple of ε_t added.

    Returns
    -------
    Escaped
        The policy.

    Raises
    ------
    ValueError, TypeError
        If ``damping`` or ``scale`` is not a finite positive number.
    """
    return Escaped(_positive(damping, "damping"), _positive(scale, "scale"))


def quadratic_change(grad_dot_step: Any, step_curvature_step: Any, step_sqnorm: Any, damping: Any) -> Any:
    r"""Return the change of the damped quadratic model along a step δ.

    .. math:: q(\delta) = g^\top\delta + \tfrac12\delta^\top C\delta + \tfrac12\gamma\|\delta\|^2

    Parameters
    ----------
    grad_dot_step : scalar
        :math:`g^\top\delta`, the gradient at θ against the step taken.
    step_curvature_step : scalar
        :math:`\delta^\top C\delta` for the curvature C of the model (the
        GGN on the batch, as kfac-jax, or the approximation's own).
    step_sqnorm : scalar
        :math:`\|\delta\|^2`.
    damping : scalar
        γ used for the step.

    Returns
    -------
    scalar
        q(δ).
    """
    return grad_dot_step + 0.5 * step_curvature_step + 0.5 * damping * step_sqnorm


def reduction_ratio(loss_before: Any, loss_after: Any, predicted_change: Any) -> Any:
    r"""Return ρ = (L(θ+δ) − L(θ)) / q(δ), both losses on the same batch.

    NaN when ``predicted_change`` is 0 and the loss did not change; the
    Levenberg–Marquardt policy treats a NaN as a failed step.

    Parameters
    ----------
    loss_before, loss_after : scalar
        L(θ) and L(θ+δ) on the same batch.
    predicted_change : scalar
        q(δ) (:func:`quadratic_change`).

    Returns
    -------
    scalar
        ρ.
    """
    return (loss_after - loss_before) / predicted_change
