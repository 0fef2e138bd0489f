"""Greedy selection over a set game: exhaustive (MoXI, SMDL) and lazy (Minoux's accelerated greedy).

Both choose, step after step, the player b whose addition gives the best objective F(S + b); they
differ in how many candidates they evaluate per step.

- :func:`greedy_select` evaluates every remaining candidate at every step: step t costs n - t
  evaluations, ``sum_{t < budget} (n - t)`` in all. A run stopped at ``budget < n`` still orders the
  rest (the *tail*) by the values F(S_{budget-1} + b) its last step already computed, for free;
  ``GreedyResult.exact`` says how many leading players are exact greedy choices. With
  ``evaluate_forced=False`` the last step of a full ordering (one candidate left, so no choice) is
  not evaluated (its value is NaN): ``n (n + 1) / 2 - 1`` evaluations.
- :func:`lazy_greedy_select` keeps, for every candidate, the gain F(S' + b) - F(S') it had when it
  was last evaluated (at an earlier, smaller S'). For a submodular F gains only shrink as S grows, so
  these stale gains are upper bounds: each step re-evaluates the ``width`` candidates with the
  largest bounds in one batch, and stops as soon as the best fresh gain is at least every remaining
  stale bound (that candidate is then the exhaustive argmax). For an F that is not submodular the
  bounds can be wrong and the choice may differ from exhaustive greedy: measure it.

Ties go to the lowest player index in both (``torch.argmax`` returns the first extremum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from reproduce.checks import positive_int
from reproduce.errors import InputError, ReproduceError


@dataclass
class GreedyResult:
    """``order`` ``[B, n]`` (or ``[B, budget]`` without a tail): the exact greedy choices first, then
    the tail; ``values``/``terms`` ``[B, budget]``: the objective (and its named parts) of the set
    chosen at each greedy step; ``tail_values`` ``[B, n - budget]``: F(S_{budget-1} + b) of each
    tail player, in tail order; ``exact``: how many leading entries of ``order`` are greedy choices;
    ``evaluations``: objective evaluations per image (a mean over the images for the lazy search)."""

    order: torch.Tensor
    values: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    tail_values: torch.Tensor | None = None
    exact: int = 0
    evaluations: float = 0


Objective = Callable[..., "torch.Tensor | Mapping[str, torch.Tensor]"]


def check_budget(budget: int, num_players: int) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(f"The budget k must be a positive integer, got {budget!r}.")
    if budget > num_players:
        raise InputError(
            f"The budget k={budget} exceeds the {num_players} regions; use k <= {num_players} "
            "(or None for the full ordering)."
        )


def rank_scores(order: torch.Tensor, num_players: int) -> torch.Tensor:
    """``[B, n]`` map values of an ordering: ``k - rank`` for ordered players (earlier = hotter), 0 else."""
    b, k = order.shape
    scores = torch.zeros(b, num_players, device=order.device)
    ranks = torch.arange(k, 0, -1, device=order.device, dtype=scores.dtype).expand(b, k)
    return scores.scatter(1, order, ranks)


def _split(out) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    parts = dict(out) if isinstance(out, Mapping) else {"total": out}
    return parts.pop("total"), parts


def _check_finite(total: torch.Tensor, step: int | str) -> None:
    if not torch.isfinite(total).all():
        raise ReproduceError(
            f"The set objective is NaN/Inf at greedy step {step}; the model's outputs on masked "
            "inputs are not finite (check the model and the fill value)."
        )


def greedy_select(
    objective: Objective, batch_size: int, num_players: int, budget: int, device: torch.device,
    maximize: bool = True, tail: bool = False, evaluate_forced: bool = True,
) -> GreedyResult:
    """Greedy forward selection: at step t choose the b maximising (or minimising) objective(S + b).

    ``objective(sets[B, M, n])`` receives the M = n - t candidate sets S + b of each image (only the
    players not chosen yet, in ascending index order) and returns ``[B, M]`` or a mapping with a
    ``"total"`` entry plus named parts, which are recorded per step for the chosen set. ``tail``
    orders the players left after ``budget`` steps by their last-step values (module docstring).
    """
    check_budget(budget, num_players)
    b, n = batch_size, num_players
    rows = torch.arange(b, device=device)
    chosen = torch.zeros(b, n, dtype=torch.bool, device=device)
    order = torch.empty(b, budget, dtype=torch.long, device=device)
    values = torch.full((b, budget), math.nan, device=device)
    terms: dict[str, torch.Tensor] = {}
    tail_order = tail_values = None
    steps = budget - 1 if budget == n and not evaluate_forced else budget
    for t in range(steps):
        cand = (~chosen).nonzero()[:, 1].view(b, n - t)  # row-major: per image, ascending index
        sets = chosen.unsqueeze(1).expand(b, n - t, n).clone()
        sets.scatter_(2, cand.unsqueeze(-1), True)
        total, parts = _split(objective(sets))
        _check_finite(total, t)
        j = (total.argmax(1) if maximize else total.argmin(1)).unsqueeze(1)
        best = cand.gather(1, j).squeeze(1)
        order[:, t] = best
        values[:, t] = total.gather(1, j).squeeze(1)
        for name, v in parts.items():
            picked = v[rows, j[:, 0]]  # [B, ...]: parts may carry trailing dims (e.g. logits)
            terms.setdefault(name, torch.full((b, budget, *picked.shape[1:]), math.nan, device=device, dtype=v.dtype))[:, t] = picked
        chosen[rows, best] = True
        if t == budget - 1 and tail and budget < n:
            rest = torch.ones_like(total, dtype=torch.bool).scatter_(1, j, False)
            left, left_values = cand[rest].view(b, -1), total[rest].view(b, -1)
            tail_values, idx = torch.sort(left_values, dim=1, descending=maximize, stable=True)
            tail_order = left.gather(1, idx)
    if steps < budget:  # the forced last step: one candidate left, nothing to compare
        order[:, steps] = (~chosen).nonzero()[:, 1]
    full = order if tail_order is None else torch.cat([order, tail_order], dim=1)
    return GreedyResult(order=full, values=values, terms=terms, tail_values=tail_values, exact=budget,
                        evaluations=sum(n - t for t in range(steps)))


def lazy_greedy_select(
    objective: Objective, batch_size: int, num_players: int, budget: int, device: torch.device, width: int = 4,
) -> GreedyResult:
    """Lazy greedy maximisation (module docstring); ``objective(sets[R, M, n], images[R])`` scores
    the sets of the given images (any images, repeats allowed; ``images=None`` means every image in
    order) and returns ``[R, M]`` or a mapping as for :func:`greedy_select`.

    Step 0 evaluates every single player (as exhaustive greedy) plus the empty set F(∅) (one more
    evaluation per image, for the first gains); afterwards each image re-evaluates its ``width``
    best-bounded candidates per round, and the rounds of all images are batched together.
    """
    check_budget(budget, num_players)
    width = positive_int("width", width, error=InputError)
    b, n = batch_size, num_players
    empty, _ = _split(objective(torch.zeros(b, 1, n, dtype=torch.bool, device=device), None))
    singles = torch.eye(n, dtype=torch.bool, device=device).expand(b, n, n)
    first, first_parts = _split(objective(singles, None))
    _check_finite(first, 0)
    state = _LazyState(budget, width, first, empty[:, 0], first_parts)
    while not state.done():
        images, sets, candidates = state.requests()
        total, parts = _split(objective(sets[:, None], images))
        _check_finite(total, "(lazy search)")
        state.update(images, candidates, total[:, 0], {k: v[:, 0] for k, v in parts.items()})
    return GreedyResult(order=state.order, values=state.values, terms=state.terms, exact=budget,
                        evaluations=n + 1 + state.evaluations / b)


class _LazyState:
    """Per image: chosen set, current value F(S), stale gains (upper bounds) and this step's fresh
    evaluations. Step 0's choice is taken from the exhaustive first evaluation."""

    def __init__(self, budget: int, width: int, first: torch.Tensor, empty: torch.Tensor, parts: dict):
        b, n = first.shape
        device = first.device
        self.budget, self.width = budget, width
        self.order = torch.empty(b, budget, dtype=torch.long, device=device)
        self.values = torch.full((b, budget), math.nan, device=device)
        self.terms = {k: torch.full((b, budget, *v.shape[2:]), math.nan, device=device, dtype=v.dtype) for k, v in parts.items()}
        self.bounds = first - empty[:, None]  # [B, n] gain of each candidate when last evaluated
        self.chosen = torch.zeros(b, n, dtype=torch.bool, device=device)
        self.fresh = torch.zeros(b, n, dtype=torch.bool, device=device)  # evaluated at the current step
        self.fresh_value = torch.full((b, n), -math.inf, device=device)  # F(S + c) of the fresh c
        self.fresh_parts = {k: torch.zeros_like(v) for k, v in parts.items()}
        self.step = torch.zeros(b, dtype=torch.long)
        self.current = torch.zeros(b, device=device)  # F(S) of the set chosen so far
        self.evaluations = 0
        for i in range(b):  # step 0 evaluated every single player: the exhaustive argmax
            j = int(torch.argmax(first[i]))
            self._choose(i, j, float(first[i, j]), {k: v[i, j] for k, v in parts.items()})

    def _choose(self, i: int, j: int, value: float, parts: dict) -> None:
        t = int(self.step[i])
        self.order[i, t] = j
        self.values[i, t] = value
        for k, v in parts.items():
            self.terms[k][i, t] = v
        self.chosen[i, j] = True
        self.step[i] = t + 1
        self.fresh[i] = False
        self.fresh_value[i] = -math.inf
        self.current[i] = value

    def done(self) -> bool:
        return bool((self.step >= self.budget).all())

    def requests(self):
        """For every unfinished image, its ``width`` stale candidates with the largest bounds."""
        images, sets, cands = [], [], []
        for i in (self.step < self.budget).nonzero().flatten().tolist():
            stale = ~(self.chosen[i] | self.fresh[i])
            bounds = torch.where(stale, self.bounds[i], torch.full_like(self.bounds[i], -math.inf))
            k = min(self.width, int(stale.sum()))
            top = torch.sort(bounds, descending=True, stable=True).indices[:k]
            for c in top.tolist():
                s = self.chosen[i].clone()
                s[c] = True
                images.append(i)
                sets.append(s)
                cands.append(c)
        dev = self.chosen.device
        return torch.tensor(images, device=dev), torch.stack(sets), torch.tensor(cands, device=dev)

    def update(self, images, candidates, totals, parts) -> None:
        self.evaluations += len(images)
        for r, (i, c) in enumerate(zip(images.tolist(), candidates.tolist())):
            self.fresh[i, c] = True
            self.fresh_value[i, c] = totals[r]
            self.bounds[i, c] = totals[r] - self.current[i]
            for k, v in parts.items():
                self.fresh_parts[k][i, c] = v[r]
        for i in set(images.tolist()):
            stale = ~(self.chosen[i] | self.fresh[i])
            values = torch.where(self.fresh[i], self.fresh_value[i], torch.full_like(self.fresh_value[i], -math.inf))
            j = int(torch.argmax(values))
            gain = values[j] - self.current[i]
            # a stale candidate could still win if its bound beats the best fresh gain, or ties it
            # with a lower index (exhaustive greedy's tie rule)
            index = torch.arange(len(stale), device=stale.device)
            rival = stale & ((self.bounds[i] > gain) | ((self.bounds[i] == gain) & (index < j)))
            if not bool(rival.any()):
                self._choose(i, j, float(values[j]), {k: v[i, j] for k, v in self.fresh_parts.items()})
