r"""Ginger and QNG as ``torch.optim.Optimizer`` subclasses.

Both optimisers take the usual ``params`` (an iterable of tensors or of
parameter-group dicts) and per-group options. One step is Algorithm 1 of the
paper: fold the curvature vector into each block's low-rank state, precondition
the gradient with the updated state, then apply heavy-ball momentum, decoupled
weight decay and the learning rate,

.. math::
   u_t = P_t^{-1} g_t, \qquad m_t = \mu\, m_{t-1} + u_t, \qquad
   \theta_{t+1} = \theta_t - \eta\, (m_t + \lambda\, \theta_t),

with :math:`P_t = \gamma I + U_t \operatorname{diag}(\sigma_t) U_t^\top`
(Ginger, Eq 14–16) or :math:`P_t = \hat A_{t+1}\hat A_{t+1}^\top` (QNG).

**Feeding the sampled-label gradient.** Pass it to ``step``::

    outputs = model(x)
    d = sampled_label_gradient(outputs, params, "categorical")   # Eq 8, before backward
    loss = F.cross_entropy(outputs, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step(curvature=d)

``curvature`` is a sequence of tensors aligned with the optimiser's parameters
(``[p for g in optimizer.param_groups for p in g["params"]]``) or a mapping
from parameter to tensor (see :mod:`lowrank_ggn.optim.torch_likelihoods`).
Without it the gradient itself is used: the empirical Fisher, not the
Fisher/GGN (see :mod:`lowrank_ggn.optim`).

**Blocks and state layout.** With ``blocks="param"`` (default, the paper's
choice) every parameter tensor is one block; with ``blocks="group"`` every
parameter group is one block (so the whole model is one block when there is
one group; user-defined groups are parameter groups). A block's curvature
state lives in ``optimizer.state[p]`` of its first parameter ``p`` under the
field names of :class:`lowrank_ggn.GingerState` (``basis`` (dim, rank),
``eigvals``, ``discarded``, ``step``, ``num_nonfinite``) or
:class:`lowrank_ggn.QNGState` (``factors`` (rank, dim), ``betas``, ``scales``,
``sqnorms``, ``step``, ``num_nonfinite``), with ``count`` (calls to ``step``
for this block); every parameter also holds its ``momentum_buffer``.
:meth:`Ginger.block_states` returns the states as NamedTuples.
``state_dict()`` and :meth:`Ginger.load_state_dict` round-trip them exactly,
in their own dtype, so a run resumed from a checkpoint continues as the
uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch

import lowrank_ggn as lg
from lowrank_ggn._core.checks import check_approximation, check_damping, check_decay
from lowrank_ggn._core.options import check_reorthonormalize_every
from lowrank_ggn.backends import array_namespace
from lowrank_ggn.optim._options import (
    DEFAULT_DAMPING,
    DEFAULT_DECAY,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MOMENTUM,
    DEFAULT_RANK,
    DEFAULT_REORTHONORMALIZE_EVERY,
    block_rank,
    check_damping_or_schedule,
    check_nonnegative,
    check_positive_int,
    check_rank,
)
from lowrank_ggn.optim.damping import DampingPolicy

__all__ = ["QNG", "Ginger", "GingerPaper", "LowRank", "LowRankPaper"]

_BLOCKS = ("param", "group")


def _flat(parts: list[torch.Tensor]) -> torch.Tensor:
    """One vector from raveled tensors: a view of a single tensor (no copy), else their concatenation.

    The fused step only reads it, so a view of a gradient is safe.
    """
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _fold_precondition(
    approx: Any, xp: Any, state: Any, d: Any, g: Any, *, gamma: Any, policy: Any
) -> tuple[Any, Any]:
    """Fold ``d`` in, then precondition ``g``: fused, or in two steps when the damping depends on the state."""
    if policy is not None and policy.needs_state:  # a damping policy of lowrank_ggn.optim.damping
        state = approx.fold(xp, state, d, donate=True)
        return state, approx.solve(xp, state, g, damping=float(policy.block_damping(gamma, state)))
    # The optimiser owns the state's tensors: the new basis may be written into the old one.
    return approx.fold_precondition(xp, state, d, g, damping=gamma, donate=True)


def _damping_value(group: dict[str, Any], count: int) -> Any:
    """Return the damping of a group at the block step ``count``: a number, a schedule value or a policy value."""
    damping = group.get("damping")
    if isinstance(damping, DampingPolicy):
        return damping.damping(group["damping_state"], count)
    return damping(count) if callable(damping) else damping


class LowRank(torch.optim.Optimizer):
    r"""Any low-rank curvature approximation as a ``torch.optim`` optimiser (Algorithm 1), block by block.

    For each block, the approximation folds in the curvature vector and the
    gradient is preconditioned with the updated state in one fused step
    (``approximation.fold_precondition``, with the state's buffers reused in
    place), followed by heavy-ball momentum, decoupled weight decay and the
    learning rate. :class:`Ginger` and :class:`QNG` are this class with the
    approximation built from ``rank`` and ``decay``.

    Parameters
    ----------
    params : iterable
        Tensors or parameter-group dicts; every option below can be set per group.
    approximation : lowrank_ggn.Ginger, lowrank_ggn.GingerProduct or lowrank_ggn.QNG
        What to keep per block, e.g. ``lg.ginger(rank=4, decay=0.99)``; a block
        of ``dim`` parameters uses rank ``min(rank, dim − 1)``.
    lr : float
        Learning rate η ≥ 0.
    damping : float, callable, DampingPolicy or None
        γ > 0, a schedule ``count -> γ`` of the block's step count, or a
        policy of :mod:`lowrank_ggn.optim.damping` (its state is the group's
        ``damping_state``; see :meth:`adapt_damping`); ``None`` for an
        approximation whose damping is implicit (QNG).
    momentum : float
        μ ∈ [0, 1), heavy-ball momentum on the preconditioned direction.
    nesterov : bool
        Nesterov momentum.
    weight_decay : float
        λ ≥ 0, decoupled (as ``torch.optim.AdamW``).
    blocks : {"param", "group"}
        One block per parameter tensor, or one per parameter group.
    update_every : int
        Fold the curvature vector into the state only every this many steps.
    state_dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``; default the parameters' dtype (at least float32).

    Examples
    --------
    >>> import torch
    >>> import lowrank_ggn as lg
    >>> from lowrank_ggn.optim.torch import LowRank
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = LowRank(model.parameters(), lg.ginger(rank=2, decay=0.99), lr=0.01, damping=1.0)
    >>> model(torch.ones(5, 4)).square().mean().backward()
    >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[Any],
        approximation: Any,
        lr: float = DEFAULT_LEARNING_RATE,
        *,
        damping: float | Callable[[int], float] | None = DEFAULT_DAMPING,
        momentum: float = DEFAULT_MOMENTUM,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        blocks: str = "param",
        update_every: int = 1,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "approximation": approximation,
            "damping": damping,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "blocks": blocks,
            "update_every": update_every,
            "state_dtype": state_dtype,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _approximation(self, group: dict[str, Any]) -> Any:
        """The approximation of a parameter group (Ginger and QNG build it from the group's options)."""
        return group["approximation"]

    # -- options -------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, checking its options.

        Parameters
        ----------
        param_group : dict
            ``{"params": [...], "lr": ..., ...}``: the group's parameters and
            any options of the class to set for this group only; options not
            given take the values passed to the constructor.

        Raises
        ------
        ValueError, TypeError
            For an invalid option, naming it. The group is then not added.
        """
        super().add_param_group(param_group)
        try:
            self._check_group(self.param_groups[-1])
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _check_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor):
            lr = float(lr)
        check_nonnegative(lr, "lr")
        check_nonnegative(group["momentum"], "momentum", upper=1.0)
        check_nonnegative(group["weight_decay"], "weight_decay")
        check_positive_int(group["update_every"], "update_every")
        if group["blocks"] not in _BLOCKS:
            msg = f"blocks must be one of {_BLOCKS}, got {group['blocks']!r}"
            raise ValueError(msg)
        if group["state_dtype"] not in (None, torch.float32, torch.float64):
            msg = f"state_dtype must be None, torch.float32 or torch.float64, got {group['state_dtype']!r}"
            raise TypeError(msg)
        for p in group["params"]:
            if not p.is_floating_point():
                msg = f"parameters must be floating point, got dtype {p.dtype}"
                raise TypeError(msg)
        approximation = self._approximation(group)
        check_approximation(approximation)
        # -- damping policies (lowrank_ggn.optim.damping) --
        if isinstance(group.get("damping"), DampingPolicy):
            if not approximation.needs_damping:
                msg = f"damping must be None for {approximation.name!r}, whose damping is implicit"
                raise ValueError(msg)
            group["damping"].check_state_type(approximation.state_type)
            group.setdefault("damping_state", group["damping"].init())
        elif approximation.needs_damping:
            check_damping_or_schedule(group["damping"])
        elif group.get("damping") is not None:
            msg = f"damping must be None for {approximation.name!r}, whose damping is implicit"
            raise ValueError(msg)

    # -- blocks --------------------------------------------------------------------------------
    @staticmethod
    def _blocks_of(group: dict[str, Any]) -> list[list[torch.Tensor]]:
        params = list(group["params"])
        if group["blocks"] == "group":
            return [params] if params else []
        return [[p] for p in params]

    @staticmethod
    def _state_dtype(group: dict[str, Any], block: Sequence[torch.Tensor]) -> torch.dtype:
        if group["state_dtype"] is not None:
            return group["state_dtype"]
        dtype = block[0].dtype
        for p in block[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        return torch.promote_types(dtype, torch.float32)

    def block_states(self) -> list[tuple[list[torch.Tensor], Any]]:
        """Return the curvature state of every block as a NamedTuple.

        Returns
        -------
        list of tuple
            ``(params, state)`` for every block that has a curvature state:
            ``params`` is the block's list of parameters and ``state`` a
            :class:`lowrank_ggn.GingerState` or :class:`lowrank_ggn.QNGState`
            whose fields are the tensors in ``optimizer.state`` (not copies).
            Blocks not stepped yet, and scalar blocks, are left out.

        Examples
        --------
        >>> import torch
        >>> from lowrank_ggn.optim.torch import Ginger
        >>> model = torch.nn.Linear(4, 3)
        >>> opt = Ginger(model.parameters(), rank=2)
        >>> model(torch.ones(5, 4)).square().mean().backward()
        >>> opt.step()
        >>> [(tuple(p.shape), tuple(st.basis.shape)) for (p, *_), st in opt.block_states()]
        [((3, 4), (12, 2)), ((3,), (3, 2))]
        """
        out = []
        for group in self.param_groups:
            for block in self._blocks_of(group):
                st = self.state.get(block[0], {})
                state_type = self._approximation(group).state_type
                if all(f in st for f in state_type._fields):
                    out.append((block, state_type(**{f: st[f] for f in state_type._fields})))
        return out

    # -- curvature routing ---------------------------------------------------------------------
    def _curvature_map(self, curvature: Any) -> dict[torch.Tensor, torch.Tensor] | None:
        if curvature is None:
            return None
        params = [p for g in self.param_groups for p in g["params"]]
        if isinstance(curvature, Mapping):
            known = {id(p) for p in params}
            for p in curvature:
                if id(p) not in known:
                    msg = "curvature: a key is not a parameter of this optimiser"
                    raise ValueError(msg)
            pairs = [(p, curvature[p]) for p in params if p in curvature]
        elif isinstance(curvature, Sequence) and not isinstance(curvature, torch.Tensor):
            if len(curvature) != len(params):
                msg = f"curvature has {len(curvature)} tensors but the optimiser has {len(params)} parameters"
                raise ValueError(msg)
            pairs = [(p, c) for p, c in zip(params, curvature, strict=True) if c is not None]
        else:
            msg = (
                "curvature must be a sequence of tensors or a mapping parameter -> tensor, "
                f"got {type(curvature).__name__}"
            )
            raise TypeError(msg)
        out: dict[torch.Tensor, torch.Tensor] = {}
        for p, c in pairs:
            if not isinstance(c, torch.Tensor):
                msg = f"curvature entries must be tensors, got {type(c).__name__}"
                raise TypeError(msg)
            if c.shape != p.shape:
                msg = (
                    f"curvature tensor of shape {tuple(c.shape)} does not match its parameter of shape {tuple(p.shape)}"
                )
                raise ValueError(msg)
            out[p] = c
        return out

    # -- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, curvature: Any = None) -> Any:  # type: ignore[override]
        """Perform one optimisation step.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (standard
            ``torch.optim`` semantics).
        curvature : sequence or mapping of tensors, optional
            The sampled-label gradient ``d_t`` of Eq 8 (see
            :func:`lowrank_ggn.optim.torch_likelihoods.sampled_label_gradient`):
            a sequence aligned with the optimiser's parameters
            (``[p for g in optimizer.param_groups for p in g["params"]]``;
            ``None`` entries allowed) or a mapping keyed by parameter.
            Parameters without an entry, or every parameter when
            ``curvature`` is ``None``, use their gradient (the empirical
            Fisher).

        Returns
        -------
        object
            The closure's loss, or ``None`` without a closure.

        Raises
        ------
        ValueError, TypeError
            If ``curvature`` does not match the parameters (length, keys or
            shapes).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        curv = self._curvature_map(curvature)
        for group in self.param_groups:
            for block in self._blocks_of(group):
                if all(p.grad is None for p in block):
                    continue
                self._step_block(group, block, curv)
        return loss

    def _step_block(
        self, group: dict[str, Any], block: list[torch.Tensor], curv: dict[torch.Tensor, torch.Tensor] | None
    ) -> None:
        for p in block:
            if p.grad is not None and p.grad.is_sparse:
                msg = "sparse gradients are not supported"
                raise RuntimeError(msg)
        dtype = self._state_dtype(group, block)
        device = block[0].device
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in block]
        g = _flat([x.reshape(-1) for x in grads]).to(dtype)
        dim = g.shape[0]
        head = self.state[block[0]]
        count = head.get("count", 0)
        damping = group.get("damping")
        policy = damping if isinstance(damping, DampingPolicy) else None  # lowrank_ggn.optim.damping
        gamma = _damping_value(group, count)
        approximation = self._approximation(group)
        rank = block_rank(dim, approximation.rank)
        gamma = gamma if approximation.needs_damping else None
        if gamma is not None:
            check_damping(gamma)
        if rank < 1:  # a scalar block: γ⁻¹g (g without damping)
            u = g if gamma is None else g / gamma
        else:
            approx = approximation if rank == approximation.rank else approximation.with_rank(rank)
            fields = approx.state_type._fields
            if not all(f in head for f in fields):
                head.update(approx.init(dim, xp=torch, dtype=dtype, device=device)._asdict())
            state = approx.state_type(**{f: head[f] for f in fields})
            xp = array_namespace(g)
            if count % group["update_every"] == 0:
                if curv is None:
                    d = g
                else:
                    d = _flat([curv.get(p, gr).reshape(-1) for p, gr in zip(block, grads, strict=True)]).to(
                        dtype=dtype, device=device
                    )
                state, u = _fold_precondition(approx, xp, state, d, g, gamma=gamma, policy=policy)
                head.update(state._asdict())
            else:
                if policy is not None:
                    gamma = float(policy.block_damping(gamma, state))
                u = approx.solve(xp, state, g, damping=gamma)
        head["count"] = count + 1
        self._apply(group, block, u)

    def _apply(self, group: dict[str, Any], block: list[torch.Tensor], u: torch.Tensor) -> None:
        lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
        start = 0
        for p in block:
            n = p.numel()
            step = u[start : start + n].reshape(p.shape).to(p.dtype)
            start += n
            if p.grad is None:
                continue
            if mu:
                st = self.state[p]
                buf = st.get("momentum_buffer")
                if buf is None:
                    buf = step.clone()
                    st["momentum_buffer"] = buf
                else:
                    buf.mul_(mu).add_(step)
                step = step.add(buf, alpha=mu) if group["nesterov"] else buf
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(step, alpha=-lr)

    # -- damping policies ------------------------------------------------------------------------
    def adapt_damping(self, reduction_ratio: float) -> None:
        """Adapt every parameter group's damping policy to the reduction ratio of the last step.

        Only the Levenberg–Marquardt policy of :mod:`lowrank_ggn.optim.damping`
        changes; groups with a number, a schedule or another policy are left
        as they are. Call it after ``step`` with ρ from
        :func:`lowrank_ggn.optim.damping.reduction_ratio`.

        Parameters
        ----------
        reduction_ratio : float
            ρ = (L(θ+δ) − L(θ)) / q(δ) of the last step (NaN counts as a failed step).
        """
        if isinstance(reduction_ratio, torch.Tensor):
            reduction_ratio = float(reduction_ratio)
        for group in self.param_groups:
            policy = group.get("damping")
            if isinstance(policy, DampingPolicy):
                group["damping_state"] = float(policy.adapt(group["damping_state"], float(reduction_ratio)))

    # -- exact state round trip ------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict, keeping each state tensor in its saved dtype.

        ``torch.optim.Optimizer.load_state_dict`` casts floating state to the
        parameter's dtype; a float64 curvature state of float32 parameters
        would lose precision. This restores the saved dtype from the saved
        values (moved to the parameter's device), so that a resumed run
        continues exactly as an uninterrupted one.

        Parameters
        ----------
        state_dict : dict
            A dict returned by ``state_dict()`` of an optimiser of the same
            class over parameters of the same shapes, in the same groups.
        """
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for p, pid in zip(params, saved_ids, strict=True):
            saved = saved_state.get(pid)
            if saved is None:
                continue
            for key, value in saved.items():
                if isinstance(value, torch.Tensor):
                    self.state[p][key] = value.to(device=p.device, copy=True)


class Ginger(LowRank):
    r"""The Ginger optimiser (Algorithm 1, corrected) for PyTorch.

    For each block, with the curvature vector :math:`d_t` and gradient
    :math:`g_t` flattened to the block,

    .. math::
       U_t \operatorname{diag}(\sigma_t) U_t^\top
         = \operatorname{best}_\tau\!\left[\alpha\, U_{t-1} \operatorname{diag}(\sigma_{t-1}) U_{t-1}^\top
           + (1-\alpha)\, d_t d_t^\top\right] \quad\text{(Eq 7)},

    .. math::
       u_t = (\gamma I + U_t \operatorname{diag}(\sigma_t) U_t^\top)^{-1} g_t \quad\text{(Eq 15–16)},
       \quad m_t = \mu m_{t-1} + u_t, \quad \theta_{t+1} = \theta_t - \eta (m_t + \lambda \theta_t).

    Parameters
    ----------
    params : iterable
        Tensors or parameter-group dicts; every option below can be set per group.
    lr : float
        Learning rate η ≥ 0 (works with ``torch.optim.lr_scheduler``).
    rank : int
        τ ≥ 1; a block of ``dim`` parameters uses ``min(rank, dim − 1)``
        (a scalar block gets ``γ⁻¹ g``).
    decay : float
        α ∈ (0, 1).
    damping : float or callable
        γ > 0, or a schedule ``count -> γ`` of the block's step count. It is
        not part of the state, so it may also be changed in
        ``param_groups`` between steps at no cost.
    momentum : float
        μ ∈ [0, 1) (heavy ball, the paper's first moment 0.9).
    nesterov : bool
        Nesterov momentum.
    weight_decay : float
        λ ≥ 0, decoupled (as ``torch.optim.AdamW``).
    blocks : {"param", "group"}
        One block per parameter tensor, or one per parameter group.
    update_every : int
        Fold the curvature vector into the state only every this many steps.
    state_dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``; default the parameters' dtype
        (at least float32).
    reorthonormalize_every : int, "auto" or None, default "auto"
        As in :func:`lowrank_ggn.ginger_update`: after every this many accepted
        updates, ``"auto"`` every 100 for float32 states and never for float64.

    Notes
    -----
    A non-finite curvature vector leaves the block's state unchanged and
    increments its ``num_nonfinite`` (as :func:`lowrank_ggn.ginger_update`);
    the parameters are still updated with the preconditioned gradient, as
    every ``torch.optim`` optimiser does (use ``torch.amp.GradScaler`` or
    check the loss to skip such steps).

    The defaults (lr = 0.1, τ = 4, α = 0.99, γ = 1, μ = 0.9, one block per
    parameter) were chosen by measurement on the reproduction in
    ``experiments/``; :mod:`lowrank_ggn.optim` says how. γ is relative to
    the scale of the curvature (the Fisher of a mean negative log-likelihood
    there).

    ``state_dict()`` and :meth:`load_state_dict` round-trip the curvature
    states exactly, in their own dtype: save both the model's and the
    optimiser's state dicts to checkpoint a run.

    Examples
    --------
    >>> import torch
    >>> from lowrank_ggn.optim.torch import Ginger
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = Ginger(model.parameters(), lr=0.01, rank=2)
    >>> model(torch.ones(5, 4)).square().mean().backward()
    >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = DEFAULT_LEARNING_RATE,
        *,
        rank: int = DEFAULT_RANK,
        decay: float = DEFAULT_DECAY,
        damping: float | Callable[[int], float] = DEFAULT_DAMPING,
        momentum: float = DEFAULT_MOMENTUM,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        blocks: str = "param",
        update_every: int = 1,
        state_dtype: torch.dtype | None = None,
        reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
    ) -> None:
        defaults = {
            "lr": lr,
            "rank": rank,
            "decay": decay,
            "damping": damping,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "blocks": blocks,
            "update_every": update_every,
            "state_dtype": state_dtype,
            "reorthonormalize_every": reorthonormalize_every,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _approximation(self, group: dict[str, Any]) -> Any:
        return lg.ginger(
            rank=group["rank"], decay=group["decay"], reorthonormalize_every=group["reorthonormalize_every"]
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        check_rank(group["rank"])
        check_decay(group["decay"])
        check_reorthonormalize_every(group["reorthonormalize_every"])
        super()._check_group(group)


class QNG(LowRank):
    r"""The QNG optimiser (He et al., 2022; the paper's §2.2, corrected) for PyTorch.

    For each block the window of the last τ factors
    :math:`K_i = \sqrt\alpha I + \beta_i q_i q_i^\top`, :math:`q_t = \hat A_t^{-1} d_t`, is
    updated first, then

    .. math::
       u_t = (\hat A_{t+1} \hat A_{t+1}^\top)^{-1} g_t, \quad m_t = \mu m_{t-1} + u_t,
       \quad \theta_{t+1} = \theta_t - \eta (m_t + \lambda \theta_t).

    QNG has no damping: its curvature is at least :math:`\alpha^{\min(\tau,t)} I`.

    Parameters
    ----------
    params : iterable
        Tensors or parameter-group dicts; every option below can be set per group.
    lr : float
        Learning rate η ≥ 0 (works with ``torch.optim.lr_scheduler``).
    rank : int
        Window length τ ≥ 1 (a block uses ``min(rank, dim − 1)``; a scalar
        block gets the identity).
    decay : float
        α ∈ (0, 1).
    momentum : float
        μ ∈ [0, 1) (heavy ball).
    nesterov : bool
        Nesterov momentum.
    weight_decay : float
        λ ≥ 0, decoupled (as ``torch.optim.AdamW``).
    blocks : {"param", "group"}
        One block per parameter tensor, or one per parameter group.
    update_every : int
        Append a factor to the window only every this many steps.
    state_dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``; default the parameters' dtype
        (at least float32).

    Notes
    -----
    A non-finite curvature vector leaves the block's window unchanged and
    increments its ``num_nonfinite``, as for :class:`Ginger`. The learning
    rate tuned on the reproduction in ``experiments/`` (τ = 4, α = 0.99,
    μ = 0.9) was 0.1 on the MLPs and 0.05 on the digits CNN.

    Examples
    --------
    >>> import torch
    >>> from lowrank_ggn.optim.torch import QNG
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = QNG(model.parameters(), lr=0.01, rank=2)
    >>> model(torch.ones(5, 4)).square().mean().backward()
    >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = DEFAULT_LEARNING_RATE,
        *,
        rank: int = DEFAULT_RANK,
        decay: float = DEFAULT_DECAY,
        momentum: float = DEFAULT_MOMENTUM,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        blocks: str = "param",
        update_every: int = 1,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "rank": rank,
            "decay": decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "blocks": blocks,
            "update_every": update_every,
            "state_dtype": state_dtype,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _approximation(self, group: dict[str, Any]) -> Any:
        return lg.qng(rank=group["rank"], decay=group["decay"])

    def _check_group(self, group: dict[str, Any]) -> None:
        check_rank(group["rank"])
        check_decay(group["decay"])
        super()._check_group(group)


# -- the authors' released update ------------------------------------------------------------------


class LowRankPaper(LowRank):
    r"""The authors' released update with any low-rank curvature approximation, for PyTorch.

    .. math::
       m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad \hat m_t = \frac{m_t}{1-\beta_1^t},\quad
       \theta_{t+1} = \theta_t - \eta\,\operatorname{clip}_{[-\rho,\rho]}\big(P_t^{-1}\hat m_t\big)
       \;(-\,\eta\lambda\theta_t),

    with :math:`P_t` the damped curvature after folding in the curvature
    vector (Algorithm 1), the clip element-wise: the update of the authors'
    code (MANGA-UOFA/Ginger, ``optimizers/ginger.py``), equal to
    :func:`lowrank_ggn.optim.optax.lowrank_paper`. Without a curvature
    vector, the gradient (not the moment) is folded in.

    Parameters
    ----------
    params : iterable
        Tensors or parameter-group dicts; every option below can be set per group.
    approximation : lowrank_ggn.Ginger, lowrank_ggn.GingerProduct or lowrank_ggn.QNG
        What to keep per block.
    lr : float
        η ≥ 0 (default the authors' 2e-4).
    damping : float, callable, DampingPolicy or None
        γ, as for :class:`LowRank` (default the authors' 1e-5; ``None`` for QNG).
    b1 : float
        β₁ ∈ [0, 1), the first-moment decay.
    clip : float or None
        ρ > 0, the element-wise bound; ``None``: no clip.
    weight_decay : float
        λ ≥ 0, decoupled (not in the authors' configuration).
    blocks : {"param", "group"}
        As for :class:`LowRank`.
    update_every : int
        As for :class:`LowRank`.
    state_dtype : dtype, optional
        As for :class:`LowRank`.

    Notes
    -----
    Each parameter's state holds ``exp_avg`` (m) and ``exp_avg_step`` (t)
    beside the block's curvature state.
    """

    def __init__(
        self,
        params: Iterable[Any],
        approximation: Any,
        lr: float = 2e-4,
        *,
        damping: Any = 1e-5,
        b1: float = 0.9,
        clip: float | None = 1.0,
        weight_decay: float = 0.0,
        blocks: str = "param",
        update_every: int = 1,
        state_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "approximation": approximation,
            "damping": damping,
            "momentum": 0.0,
            "nesterov": False,
            "weight_decay": weight_decay,
            "blocks": blocks,
            "update_every": update_every,
            "state_dtype": state_dtype,
            "b1": b1,
            "clip": clip,
        }
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_nonnegative(group["b1"], "b1", upper=1.0)
        if group["clip"] is not None:
            check_damping(group["clip"], "clip")
        if group["momentum"]:
            msg = "momentum must be 0: the update is preconditioned first moment (b1), not heavy ball"
            raise ValueError(msg)
        super()._check_group(group)

    def _step_block(
        self, group: dict[str, Any], block: list[torch.Tensor], curv: dict[torch.Tensor, torch.Tensor] | None
    ) -> None:
        # Precondition the debiased moment: LowRank reads p.grad, so it sees m̂ for the step and the raw
        # gradient (or the given curvature vector) for the fold; the gradients are restored afterwards.
        b1 = group["b1"]
        curv = dict(curv) if curv is not None else {}
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        for p in block:
            if p.grad is None:
                continue
            st = self.state[p]
            m = st.get("exp_avg")
            if m is None:
                m = torch.zeros_like(p.grad)
                st["exp_avg"] = m
            t = int(st.get("exp_avg_step", 0)) + 1
            st["exp_avg_step"] = t
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            curv.setdefault(p, p.grad)
            saved.append((p, p.grad))
            p.grad = m / (1 - b1**t)
        try:
            super()._step_block(group, block, curv)
        finally:
            for p, grad in saved:
                p.grad = grad

    def _apply(self, group: dict[str, Any], block: list[torch.Tensor], u: torch.Tensor) -> None:
        if group["clip"] is not None:
            u = u.clamp(-group["clip"], group["clip"])
        super()._apply(group, block, u)


class GingerPaper(LowRankPaper):
    r"""Ginger as the authors released it, for PyTorch: :class:`LowRankPaper` with ``lg.ginger``.

    The defaults are the authors' configuration (MANGA-UOFA/Ginger: τ = 4,
    α = b2 = 0.99, damping 1e-5, ρ = 1, learning rate 2e-4, b1 = 0.9); the
    updates equal those of :func:`lowrank_ggn.optim.optax.ginger_paper`.

    Parameters
    ----------
    params : iterable
        Tensors or parameter-group dicts.
    lr : float
        η ≥ 0.
    rank : int
        τ ≥ 1.
    decay : float
        α ∈ (0, 1).
    damping : float, callable or DampingPolicy
        γ > 0, a schedule, or a policy of :mod:`lowrank_ggn.optim.damping`.
    b1 : float
        β₁ ∈ [0, 1).
    clip : float or None
        ρ > 0, or ``None`` for no clip.
    weight_decay : float
        λ ≥ 0, decoupled.
    blocks : {"param", "group"}
        As for :class:`LowRank`.
    update_every : int
        As for :class:`LowRank`.
    state_dtype : dtype, optional
        As for :class:`LowRank`.
    reorthonormalize_every : int, "auto" or None
        As for :class:`Ginger`.

    Examples
    --------
    >>> import torch
    >>> from lowrank_ggn.optim.torch import GingerPaper
    >>> model = torch.nn.Linear(4, 3)
    >>> opt = GingerPaper(model.parameters(), rank=2)
    >>> model(torch.ones(5, 4)).square().mean().backward()
    >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-4,
        *,
        rank: int = 4,
        decay: float = 0.99,
        damping: Any = 1e-5,
        b1: float = 0.9,
        clip: float | None = 1.0,
        weight_decay: float = 0.0,
        blocks: str = "param",
        update_every: int = 1,
        state_dtype: torch.dtype | None = None,
        reorthonormalize_every: int | Literal["auto"] | None = DEFAULT_REORTHONORMALIZE_EVERY,
    ) -> None:
        check_rank(rank)
        check_decay(decay)
        check_reorthonormalize_every(reorthonormalize_every)
        approximation = lg.ginger(rank=rank, decay=decay, reorthonormalize_every=reorthonormalize_every)
        super().__init__(
            params,
            approximation,
            lr,
            damping=damping,
            b1=b1,
            clip=clip,
            weight_decay=weight_decay,
            blocks=blocks,
            update_every=update_every,
            state_dtype=state_dtype,
        )
