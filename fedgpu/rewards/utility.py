"""The round's game over cohorts: what a set of cohort sums is worth on the job driver's validation set.

Players are cohorts, never single nodes: the driver only holds decrypted sums ``S_c = sum w_i delta_i``
and weights ``W_c = sum w_i``. A coalition's model is built with the *same* rule as the real update
(the job's :mod:`fedgpu.aggregation` rule: weighted FedAvg by default, or a robust one), so a cohort is
valued for what it does to the model actually shipped under the rule in force.

Utility is measured against the free step. With ``w`` the global weights and ``b`` the last global
change, every model the driver may build is ``w + eta * g * P(agg(S)) + beta * b``: ``agg(S)`` is the
round's aggregate with the cohorts outside ``S`` sending zeros (their weight kept: FedAvg's is then the
sum of S's cohort sums over the round's total weight, the median's the median of S's cohort means and
as many zeros as cohorts left out), ``P`` removes the component along ``b``, and ``g`` is the server's learning
rate, a trust region it keeps for itself (1 in round 1, then the multiple that worked last round).
The round's momentum ``beta*`` is the server's too: the one its shipped model took last round (in the
first round, the empty coalition's best of ``momenta``). Every coalition takes the server's step
(``eta = 1``) and momentum; nothing is the coalition's choice:

    u(S) = L_val(w + beta* b) - L_val(w + g P(agg(S)) + beta* b)   for S non-empty,   u(empty) = 0.

Why absent cohorts are zeros and the step is not chosen per coalition: the game is then additive up to
the loss's curvature. To second order, u(S) = G.s_S - s_S.H.s_S / 2 with s_S the sum of S's parts, and
the Shapley value of a cohort is s_C.(G - H s_all / 2): linear in what its members sent. So the value
of a cohort is the sum of its members' values, which is the model the regression over reshuffled
cohorts (:mod:`fedgpu.rewards.estimate`) assumes. Had each coalition its own best step (or a step of
fixed length along its normalised direction), two good nodes and a free rider would stretch their
step to match three good nodes and the free rider would look worth a third of the cohort
(docs/protocol.md, "Measured").

The shipped model is tuned further (:meth:`CohortGame.tune`): the kept coalition's best step *and*
momentum on the grids, which set the next round's learning rate (``eta * g``) and momentum. What the
tuning adds is the server's own choice, credited to nobody, as the free step is. The robust rule asks
:meth:`CohortGame.best` whether a cohort harms the direction, at each set's best step.

So what the server gets for nothing is worth nothing. A node that sends zeros adds nothing to any
step (its claimed weight shrinks every coalition's step alike): an exact null player. A whole cohort
that sends zeros is one under every rule, since leaving it out of a coalition changes nothing the rule
sees; that holds only because absent cohorts are zeros and not missing. A node that
replays ``b`` sends a vector that ``P`` maps to zero: the same. Validation *loss* is used, not
accuracy: it moves smoothly under DP noise where accuracy moves in steps of 1/n.

A coalition costs one forward pass. Grids of candidates (the free step's momentum in round 1, the
robust rule's steps, the shipped model's steps x momenta) are compared on one fixed quarter of the
validation set, a quarter of a pass each (on all of it when it has fewer than ``SMALL_VALIDATION``
samples).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedgpu.aggregation import AggregationRule, CohortRecord, FedAvg
from fedgpu.errors import ConfigError, ProtocolError, RewardsError
from fedgpu.models.flat import flatten, float_keys, num_values
from fedgpu.rewards.shapley import Coalition

# Per-sample cross-entropy is capped here: above it the true class has probability < e^-100, which says
# nothing more about usefulness, and the cap keeps a diverged (NaN/inf) coalition model finite so that
# it cannot wreck the Shapley arithmetic of every other cohort.
DEFAULT_MAX_SAMPLE_LOSS = 100.0
# Validation sets smaller than this choose steps on all their samples, not on a quarter.
SMALL_VALIDATION = 400
_FEDAVG: AggregationRule = FedAvg()


def flatten_params(model: nn.Module) -> np.ndarray:
    """The model's values as one float64 vector, in the one flat order (:mod:`fedgpu.models.flat`): the
    order of what nodes send and of the global model the driver passes in."""
    return flatten(model.state_dict())


def load_flat(model: nn.Module, flat: np.ndarray) -> None:
    """Write a flat vector (``flatten_params`` order) into the model's floating-point entries in place."""
    state = model.state_dict()  # detached tensors that share the model's storage
    vec = np.asarray(flat)
    if vec.shape != (num_values(state),):
        raise RewardsError(f"flat vector has shape {vec.shape}, the model has {num_values(state)} values")
    keys = float_keys(state)
    if not keys:
        return
    src = torch.from_numpy(np.ascontiguousarray(vec)).to(state[keys[0]].device)  # one transfer
    pos = 0
    with torch.no_grad():
        for key in keys:
            t = state[key]
            t.copy_(src[pos : pos + t.numel()].view(t.shape))  # rounded to the entry's dtype, as torch.as_tensor would
            pos += t.numel()


def _orthonormal(vectors: Sequence[np.ndarray]) -> np.ndarray | None:
    """An orthonormal basis (rows) of the vectors' span, by Gram-Schmidt; None when they are all 0. A
    vector (nearly) in the span of those before it adds no row."""
    rows: list[np.ndarray] = []
    for v in vectors:
        norm = float(np.linalg.norm(v))
        if norm == 0.0:
            continue
        r = np.asarray(v, dtype=np.float64).copy()
        for q in rows:
            r -= float(q @ r) * q
        rest = float(np.linalg.norm(r))
        if rest > 1e-6 * norm:
            rows.append(r / rest)
    return np.stack(rows) if rows else None


class CohortGame:
    """u(S) over cohorts 0..C-1, one forward pass over the validation set per distinct coalition.

    Call the instance with a ``frozenset`` of cohort indices; it is a ready ``Utility`` for
    :func:`fedgpu.rewards.shapley.shapley`. ``global_params`` and ``baseline_delta`` are flat vectors
    in ``flatten_params`` order (:mod:`fedgpu.models.flat`). ``aggregate`` is the job's rule and
    ``members`` the cohorts' member lists it is given (empty when not passed). Models with
    floating-point buffers (BatchNorm statistics) are refused: their running statistics would be
    averaged and valued as if they were weights. Buffers a model lists in ``fixed_buffers`` (tab_mlp's
    feature scaler) are allowed: the driver zeroes every sum there, so they never move.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        global_params: np.ndarray,
        baseline_delta: np.ndarray | None,
        cohort_sums: Sequence[np.ndarray],
        cohort_weights: Sequence[float],
        val_x: np.ndarray,
        val_y: np.ndarray,
        aggregate: AggregationRule = _FEDAVG,
        *,
        members: Sequence[Sequence[str]] | None = None,
        batch_size: int = 4096,
        max_sample_loss: float = DEFAULT_MAX_SAMPLE_LOSS,
        step_sizes: Sequence[float] = (1.0,),
        momenta: Sequence[float] = (0.0,),
        server_lr: float = 1.0,
        momentum: float | None = None,
        earlier_changes: Sequence[np.ndarray] = (),
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model_factory().to(self.device).eval()
        fixed = set(getattr(self.model, "fixed_buffers", ()))  # set once (tab_mlp's scaler): no update moves them
        if any(b.is_floating_point() and name not in fixed for name, b in self.model.named_buffers()):
            raise ConfigError("CohortGame needs a model without floating-point buffers (use GroupNorm, not BatchNorm)")
        num_params = num_values(self.model.state_dict())
        self.global_params = _flat(global_params, num_params, "global_params")
        self.baseline_delta = np.zeros(num_params) if baseline_delta is None else _flat(baseline_delta, num_params, "baseline_delta")
        if len(cohort_sums) != len(cohort_weights):
            raise RewardsError(f"{len(cohort_sums)} cohort sums but {len(cohort_weights)} cohort weights")
        self.cohort_sums = [_cohort_sum(s, num_params, c) for c, s in enumerate(cohort_sums)]
        self.cohort_weights = [_cohort_weight(w, c) for c, w in enumerate(cohort_weights)]
        if members is not None and len(members) != len(cohort_sums):
            raise RewardsError(f"{len(cohort_sums)} cohort sums but {len(members)} member lists")
        self.cohort_members: list[tuple[str, ...]] = [tuple(m) for m in members] if members is not None else [() for _ in cohort_sums]
        if len(val_x) != len(val_y) or len(val_y) == 0:
            raise RewardsError(f"validation set needs matching, non-empty x and y; got {len(val_x)} and {len(val_y)}")
        self.aggregate = aggregate
        if not step_sizes or any(not (math.isfinite(e) and e > 0) for e in step_sizes):
            raise RewardsError(f"step_sizes must be finite and > 0, got {list(step_sizes)}")
        self.step_sizes = tuple(float(e) for e in step_sizes)
        if not momenta or any(not (math.isfinite(b) and 0 <= b <= 1) for b in momenta):
            raise RewardsError(f"momenta must be numbers in [0, 1], got {list(momenta)}")
        # Without a last change (the first round) every momentum is the same model: try one.
        self.momenta = tuple(sorted({float(b) for b in momenta})) if self.baseline_delta.any() else (0.0,)
        # The round's momentum, the same for every coalition: the caller passes the server's own (the one
        # it shipped last round); without one the free step picks it from ``momenta``.
        if momentum is not None and not (math.isfinite(momentum) and 0 <= momentum <= 1):
            raise RewardsError(f"momentum must be a number in [0, 1], got {momentum}")
        self.momentum = None if momentum is None or not self.baseline_delta.any() else float(momentum)
        # What the server already knows: the last change and ``earlier_changes`` (the ones before it). A
        # cohort is valued, and the server steps, only along what is new: a node that replays the global
        # change since its last task, rounds it sat out included, sends nothing new (an exact null player).
        self._known = _orthonormal([self.baseline_delta, *(_flat(c, num_params, "earlier_changes") for c in earlier_changes)])
        # The server's learning rate: a coalition's step is this times the round's aggregate with the cohorts
        # outside it sending zeros, the same for every coalition, so a coalition's step grows with what its
        # members sent and never with what it leaves out. The caller passes the server's own (the one that
        # worked last round); 1 is plain FedAvg.
        if not (math.isfinite(server_lr) and server_lr > 0):
            raise RewardsError(f"server_lr must be a finite number > 0, got {server_lr}")
        self.server_lr = float(server_lr)
        self._zeros = np.zeros_like(self.global_params)
        self._steps: dict[Coalition, tuple[float, float]] = {}
        self.batch_size = batch_size
        self.max_sample_loss = max_sample_loss
        x = torch.as_tensor(np.ascontiguousarray(val_x), dtype=torch.float32, device=self.device)
        y = torch.as_tensor(np.asarray(val_y), dtype=torch.int64, device=self.device)
        n = len(y)
        perm = np.random.default_rng(0).permutation(n)
        # Below SMALL_VALIDATION samples a quarter is too few to choose a step on, and a pass costs little:
        # use all of them (docs/protocol.md, "Measured").
        cut = n if n < SMALL_VALIDATION else (n + 3) // 4
        self._parts = (np.sort(perm[:cut]), np.sort(perm[cut:]))  # (choose on, score on too)
        self._data = [(x, y)] + [(x[h], y[h]) for h in self._parts]
        self._losses: dict[Coalition, np.ndarray] = {}  # 8 bytes x samples x coalitions evaluated
        self._quarter: dict[tuple[Coalition, tuple[float, float]], np.ndarray] = {}  # candidates' losses on the choice quarter
        self._last_step: tuple[Coalition, np.ndarray] | None = None
        self._linear: np.ndarray | None = None  # linear_values, once computed
        self._sum_all: np.ndarray | None = None  # FedAvg's numerator over all cohorts (_fedavg_without)
        self.forward_passes = 0.0  # in passes over the whole validation set (a quarter counts 1/4)

    @property
    def num_cohorts(self) -> int:
        return len(self.cohort_sums)

    def server_step(self, coalition: Coalition) -> np.ndarray:
        """``g * P(agg(S))``: the round's aggregate with the cohorts outside S sending zeros, without its
        part along the last change, times the server's learning rate ``g``.

        Absent cohorts count as zeros, not as missing: a coalition's step is the sum of its cohorts'
        contributions, so the game is additive up to the loss's curvature and a cohort's Shapley value is
        (to second order) the sum of what its members sent, which is what lets a regression over
        reshuffled cohorts recover each node's part. A node that sends zeros adds nothing to any step:
        an exact null player.
        """
        coalition = frozenset(coalition)
        if self._last_step is not None and self._last_step[0] == coalition:
            return self._last_step[1]  # a coalition's candidates are built one after another
        members = sorted(coalition)
        if any(not 0 <= c < self.num_cohorts for c in members):
            raise RewardsError(f"coalition {members} names cohorts outside 0..{self.num_cohorts - 1}")
        step = self.server_lr * self._direction(coalition)
        self._last_step = (coalition, step)
        return step

    def _direction(self, coalition: Coalition) -> np.ndarray:
        """P(agg(S)): the rule over the round's cohorts with non-members sending zeros (their weights and
        members kept), without its part along the last change."""
        if not coalition:
            return np.zeros_like(self.global_params)
        if self.linear and 2 * len(coalition) > self.num_cohorts:
            delta = self._fedavg_without([c for c in range(self.num_cohorts) if c not in coalition])
        else:
            cohorts = [
                CohortRecord(self.cohort_sums[c] if c in coalition else self._zeros, self.cohort_weights[c], self.cohort_members[c])
                for c in range(self.num_cohorts)
            ]
            delta = np.asarray(self.aggregate(cohorts), dtype=np.float64)
        if delta.shape != self.global_params.shape:
            raise RewardsError(f"aggregate returned shape {delta.shape}, expected {self.global_params.shape}")
        if self._known is not None:
            norm = float(np.linalg.norm(delta))
            delta = self._project(delta)
            if float(np.linalg.norm(delta)) <= 1e-9 * norm:
                delta = np.zeros_like(delta)  # a replay of known changes: rounding residue is no direction
        return delta

    def _fedavg_without(self, absent: Sequence[int]) -> np.ndarray:
        """FedAvg of the round with the ``absent`` cohorts sending zeros, from the sum of all of them less
        theirs: a set near the grand coalition (the elimination's) costs its few absent cohorts, not all."""
        total = math.fsum(self.cohort_weights)
        if total <= 0.0:
            return np.zeros_like(self.global_params)
        if self._sum_all is None:
            self._sum_all = np.add.reduce([s for s, w in zip(self.cohort_sums, self.cohort_weights, strict=True) if w > 0.0] or [self._zeros])
        less = [self.cohort_sums[c] for c in absent if self.cohort_weights[c] > 0.0]
        return (self._sum_all - np.add.reduce(less) if less else self._sum_all) / total

    def restrict(self, cohorts: Sequence[int]) -> CohortGame:
        """The same round's game over some of its cohorts (the kept ones: the rule over them is the round's
        model). The free step does not depend on the cohorts, so its evaluation is shared, not repeated."""
        sub = copy.copy(self)
        sub.cohort_sums = [self.cohort_sums[c] for c in cohorts]
        sub.cohort_weights = [self.cohort_weights[c] for c in cohorts]
        sub.cohort_members = [self.cohort_members[c] for c in cohorts]
        empty: Coalition = frozenset()
        sub._losses = {k: v for k, v in self._losses.items() if k == empty}
        sub._steps = {k: v for k, v in self._steps.items() if k == empty}
        sub._quarter = {k: v for k, v in self._quarter.items() if k[0] == empty}
        sub._last_step = None
        sub._sum_all = None
        sub._linear = None
        sub.forward_passes = 0.0
        return sub

    def knowing(self, earlier_changes: Sequence[np.ndarray]) -> CohortGame:
        """The same round's game with ``earlier_changes`` known to the server too (as the constructor's):
        the game values are played in, while the shipped model keeps every direction but the last change's
        (projecting older changes out of the server's step, too, halved what a 40-round job learned)."""
        if not earlier_changes:
            return self
        sub = self.restrict(range(self.num_cohorts))
        n = len(self.global_params)
        sub._known = _orthonormal([self.baseline_delta, *(_flat(c, n, "earlier_changes") for c in earlier_changes)])
        return sub

    def candidates(self, coalition: Coalition) -> list[tuple[float, float]]:
        """The (eta, beta) pairs this coalition may take: the empty one only the round's momentum (without
        one, its best of ``momenta`` or nothing), the others the server's step (eta = 1) at that momentum.

        A coalition does not choose its own step: if it could, a cohort of two good nodes and a free rider
        would stretch its step to match a cohort of three, and the free rider would look worth a third.
        """
        if not coalition:
            return [(0.0, self.momentum)] if self.momentum is not None else [(0.0, b) for b in sorted({0.0, *self.momenta})]
        return [(1.0, self.step(frozenset())[1])]

    def best(self, coalition: Coalition) -> float:
        """u(S) at the coalition's best step of ``step_sizes`` (the round's momentum), on the choice quarter.

        This is the robust rule's question, "does the model do better without this cohort?", asked of
        directions and not of lengths: at the server's fixed step, leaving any cohort out of an
        overlong step would look like a gain.
        """
        coalition = frozenset(coalition)
        if not coalition:
            return 0.0
        return float(self.best_losses(frozenset()).mean() - self.best_losses(coalition).mean())

    def best_losses(self, coalition: Coalition) -> np.ndarray:
        """Per-sample losses on the choice quarter of the coalition's model at its best step of
        ``step_sizes`` (the free step's for the empty coalition): what :meth:`best` averages, kept per
        sample so that two sets can be compared sample by sample (a paired test)."""
        coalition = frozenset(coalition)
        if not coalition:
            return self.sample_losses(coalition)[self._parts[0]]
        beta = self.step(frozenset())[1]
        eta = min(self.step_sizes, key=lambda e: self._choice_loss(coalition, (e, beta)))
        return self._quarter[coalition, (eta, beta)]

    def tune(self, coalition: Coalition) -> tuple[float, float]:
        """The (eta, beta) of the model the server ships from this coalition: its best on the whole grid
        ``step_sizes`` x ``momenta``, compared on the same quarter of the data as every choice. Without a
        cohort it is the best momentum, 0 included: when no cohort helped, going on along the last change
        at last round's momentum may be what hurts."""
        coalition = frozenset(coalition)
        if coalition:
            grid = [(e, b) for e in self.step_sizes for b in self.momenta]
        else:
            grid = [(0.0, b) for b in sorted({0.0, *self.momenta})]
        return min(grid, key=lambda c: self._choice_loss(coalition, c))

    def update(self, coalition: Coalition, choice: tuple[float, float] | None = None) -> np.ndarray:
        """The change ``eta * g * P(agg(S)) + beta * b`` applied to ``w``: the game's choice for this
        coalition unless another (eta, beta) is given (the tuned one of the shipped model)."""
        eta, beta = self.step(coalition) if choice is None else choice
        return eta * self.server_step(coalition) + beta * self.baseline_delta

    def step(self, coalition: Coalition) -> tuple[float, float]:
        """The (server step, momentum) chosen for this coalition (evaluates it if needed)."""
        coalition = frozenset(coalition)
        if coalition not in self._steps:
            self.sample_losses(coalition)
        return self._steps[coalition]

    def sample_losses(self, coalition: Coalition) -> np.ndarray:
        """Per-sample validation loss of the coalition's best model (capped; never NaN; cached)."""
        coalition = frozenset(coalition)
        hit = self._losses.get(coalition)
        if hit is not None:
            return hit
        cands = self.candidates(coalition)
        if len(cands) == 1:
            choice, losses = cands[0], self._losses_of(self.global_params + self.update(coalition, cands[0]))
        else:
            # Chosen on a quarter of the data, for every coalition alike (the real update too).
            choice = min(cands, key=lambda c: self._choice_loss(coalition, c))
            losses = np.empty(len(self._data[0][1]))
            losses[self._parts[0]] = self._quarter[coalition, choice]
            losses[self._parts[1]] = self._losses_of(self.global_params + self.update(coalition, choice), part=2)
        self._steps[coalition] = choice
        self._losses[coalition] = losses
        return losses

    def _choice_loss(self, coalition: Coalition, choice: tuple[float, float]) -> float:
        """Mean loss of one (eta, beta) on the quarter the choices are made on (cached per candidate)."""
        key = (coalition, choice)
        if key not in self._quarter:
            self._quarter[key] = self._losses_of(self.global_params + self.update(coalition, choice), part=1)
        return float(self._quarter[key].mean())

    @property
    def linear(self) -> bool:
        """Whether the rule is linear in the cohorts (FedAvg), so that :meth:`linear_values` applies."""
        return type(self.aggregate) is FedAvg

    def parts(self) -> np.ndarray:
        """Each cohort's part ``d_c`` of every coalition's step under FedAvg: ``d_S = sum of d_c over S``,
        shape (cohorts, params). Cohorts of weight 0 are left out by the rule: their part is 0."""
        if not self.linear:
            raise RewardsError(f"cohort parts need a rule linear in its cohorts (fedavg), not {self.aggregate.name}")
        total = math.fsum(self.cohort_weights)
        out = np.zeros((self.num_cohorts, len(self.global_params)))
        if total <= 0.0:
            return out
        for c, (s, w) in enumerate(zip(self.cohort_sums, self.cohort_weights, strict=True)):
            if w > 0.0:
                out[c] = s / total
        if self._known is not None:
            out -= (out @ self._known.T) @ self._known
        out *= self.server_lr
        return out

    def linear_values(self) -> np.ndarray:
        """Shapley values of the round's game to second order, from one gradient: ``-d_c . grad L(m)``.

        With the loss quadratic along the round's steps, u(S) = -G.d_S - d_S.H.d_S / 2 and a cohort's
        Shapley value is -d_c.(G + H d_all / 2), which is -d_c times the gradient at the midpoint
        m = w + beta b + d_all / 2: one forward and backward pass for every cohort at once, where the
        sampled estimator needs hundreds of passes and still grows noisier with the players. The values
        add up to u(all) up to third order. FedAvg only (:attr:`linear`).
        """
        if self._linear is None:
            if not self.linear:
                self.parts()  # raises: the rule is not linear in its cohorts
            # d_c = g P(s_c) / W with P symmetric, so d_c . grad = g s_c . P(grad) / W: no (cohorts x params) matrix.
            beta = self.step(frozenset())[1]
            mid = self.global_params + beta * self.baseline_delta + 0.5 * self.server_step(frozenset(range(self.num_cohorts)))
            grad = self._project(self._gradient(mid))
            total = math.fsum(self.cohort_weights)
            scale = self.server_lr / total if total > 0.0 else 0.0
            self._linear = np.array([-scale * float(s @ grad) if w > 0.0 else 0.0 for s, w in zip(self.cohort_sums, self.cohort_weights, strict=True)])
        return self._linear.copy()

    def _project(self, vec: np.ndarray) -> np.ndarray:
        """P: ``vec`` without its part in the span of the changes the server knows."""
        return vec if self._known is None else vec - self._known.T @ (self._known @ vec)

    def _gradient(self, params: np.ndarray) -> np.ndarray:
        """Gradient of the mean capped per-sample validation loss at ``params``, in the flat order."""
        load_flat(self.model, params)
        x, y = self._data[0]
        named = dict(self.model.named_parameters())
        self.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            for i in range(0, len(y), self.batch_size):
                losses = nn.functional.cross_entropy(self.model(x[i : i + self.batch_size]), y[i : i + self.batch_size], reduction="none")
                capped = torch.clamp(torch.nan_to_num(losses, nan=self.max_sample_loss, posinf=self.max_sample_loss), max=self.max_sample_loss)
                (capped.sum() / len(y)).backward()  # type: ignore[no-untyped-call]
        self.forward_passes += 1.0
        grads = []
        for key, t in self.model.state_dict().items():
            if not t.is_floating_point():
                continue
            p = named.get(key)
            g = p.grad if p is not None else None
            grads.append(np.zeros(t.numel()) if g is None else g.detach().double().reshape(-1).cpu().numpy())
        self.model.zero_grad(set_to_none=True)
        return np.concatenate(grads) if grads else np.zeros(0)

    def __call__(self, coalition: Coalition) -> float:
        coalition = frozenset(coalition)
        return 0.0 if not coalition else float(self.sample_losses(frozenset()).mean() - self.sample_losses(coalition).mean())

    @torch.no_grad()
    def _losses_of(self, params: np.ndarray, part: int = 0) -> np.ndarray:
        """Per-sample losses of ``params`` on the whole validation set (part 0), its first quarter (1) or the rest (2)."""
        load_flat(self.model, params)
        x, y = self._data[part]
        if len(y) == 0:
            return np.zeros(0)
        self.forward_passes += len(y) / len(self._data[0][1])
        out = []
        for i in range(0, len(y), self.batch_size):
            logits = self.model(x[i : i + self.batch_size])
            out.append(nn.functional.cross_entropy(logits, y[i : i + self.batch_size], reduction="none"))
        losses = torch.cat(out).double().cpu().numpy()
        capped: np.ndarray = np.minimum(np.nan_to_num(losses, nan=self.max_sample_loss, posinf=self.max_sample_loss), self.max_sample_loss)
        return capped


def noise_floor(game: CohortGame, coalition: Coalition | None = None) -> float:
    """Standard error of u(coalition) (default: all cohorts) over draws of the validation set.

    u is a mean of per-sample loss *differences*, so its error is std(difference) / sqrt(n): the shared
    per-sample difficulty cancels and the floor measures only how much the utility would move with
    another draw of validation data (what a bootstrap over samples estimates, here exactly and without
    a random resample). Values with |value| below it are indistinguishable from 0 and should be paid as
    0 for the round; it is also the natural ``truncation_tol`` of the sampled Shapley estimator.
    """
    target = frozenset(range(game.num_cohorts)) if coalition is None else frozenset(coalition)
    diff = game.sample_losses(frozenset()) - game.sample_losses(target)
    if len(diff) < 2:
        raise RewardsError("a noise floor needs at least 2 validation samples")
    return float(diff.std(ddof=1) / math.sqrt(len(diff)))


def zero_below_floor(values: np.ndarray, floor: float) -> np.ndarray:
    """Values whose magnitude is under the evaluation noise floor, set to exactly 0."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.abs(values) < floor, 0.0, values)


def _flat(vec: np.ndarray, num_params: int, name: str) -> np.ndarray:
    arr = np.asarray(vec, dtype=np.float64)
    if arr.shape != (num_params,):
        raise RewardsError(f"{name} has shape {arr.shape}, the model has {num_params} parameters")
    if not np.isfinite(arr).all():
        raise RewardsError(f"{name} holds NaN or infinite values")
    return arr


def _cohort_sum(vec: np.ndarray, num_params: int, cohort: int) -> np.ndarray:
    """Decrypted sums come from untrusted nodes: a wrong size or a NaN is the senders' fault."""
    arr = np.asarray(vec, dtype=np.float64)
    if arr.shape != (num_params,):
        raise ProtocolError(f"cohort {cohort}: sum has shape {arr.shape}, the model has {num_params} parameters")
    if not np.isfinite(arr).all():
        raise ProtocolError(f"cohort {cohort}: sum holds NaN or infinite values; drop the cohort before valuation")
    return arr


def _cohort_weight(weight: float, cohort: int) -> float:
    w = float(weight)
    if not math.isfinite(w) or w < 0.0:
        raise ProtocolError(f"cohort {cohort}: weight {weight!r} is not a finite number >= 0")
    return w


__all__ = [
    "CohortGame",
    "DEFAULT_MAX_SAMPLE_LOSS",
    "SMALL_VALIDATION",
    "flatten_params",
    "load_flat",
    "noise_floor",
    "zero_below_floor",
]
