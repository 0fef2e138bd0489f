"""mu-fidelity (Bhatt et al., IJCAI 2020), with Xplique's ``MuFidelity`` settings.

For each image, ``samples`` random subsets S of a ``grid x grid`` cell partition are set to the
baseline: each cell is removed with probability ``subset`` (Xplique draws ``u > subset`` per cell
to keep it, so the removed share varies around ``subset``) and upsampled to pixels by
nearest-neighbour (TF's half-pixel ``nearest``, torch's ``nearest-exact``). The score is the
correlation over the subsets between

- the attribution removed, ``sum_{i in S} phi_i``, and
- the drop of the explained class' score, ``f(x) - f(x with S at the baseline)``.

Defaults follow Xplique: grid 9, subset 20 %, 200 samples, baseline 0 (normalised space), raw
logit. ``correlation="pearson"`` is Bhatt et al.'s definition; Xplique computes Spearman
(``"spearman"``). Like Xplique, an image whose drops or removed attributions do not vary scores 0;
such images are counted in the ``degenerate`` diagnostic. Subsets are seeded per sample by
``(seed, dataset index)``. Higher is better.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.errors import ConfigError
from reproduce.checks import check_choice, check_fraction
from reproduce.metrics.base import AttributionBatch, AttributionMetric
from reproduce.metrics.perturbation_curves import Perturber, check_fill, target_scores
from reproduce.metrics.registry import register_metric
from reproduce.metrics.sample_rng import uniform

CORRELATIONS = ("pearson", "spearman")


def subset_masks(indices: torch.Tensor, *, grid: int, subset: float, samples: int, seed: int,
                 device: torch.device | str) -> torch.Tensor:
    """Kept cells ``[B, samples, grid, grid]`` (True = kept), drawn per sample from (seed, index)."""
    u = uniform(indices, seed, (samples, grid, grid), device)
    return u > subset


def _pearson(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Undefined when either side is constant (tested exactly: centring a constant row in floating
    # point can leave round-off that would masquerade as a perfect correlation).
    ok = (a.amax(-1) > a.amin(-1)) & (b.amax(-1) > b.amin(-1))
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    return torch.where(ok, (a * b).sum(-1) / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom)), ok


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks along the last dim (ties share their mean rank, as scipy's spearmanr)."""
    order = v.argsort(dim=-1, stable=True)
    sorted_v = v.gather(-1, order)
    n = v.shape[-1]
    pos = torch.arange(n, device=v.device, dtype=torch.float64).expand_as(sorted_v)
    new_group = torch.ones_like(sorted_v, dtype=torch.bool)
    new_group[..., 1:] = sorted_v[..., 1:] != sorted_v[..., :-1]
    group = new_group.long().cumsum(-1) - 1
    sums = torch.zeros_like(pos).scatter_add_(-1, group, pos)
    counts = torch.zeros_like(pos).scatter_add_(-1, group, torch.ones_like(pos))
    avg = (sums / counts.clamp_min(1)).gather(-1, group)
    return torch.empty_like(avg).scatter_(-1, order, avg)


def rowwise_correlation(a: torch.Tensor, b: torch.Tensor, kind: str = "pearson") -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise correlation of ``[B, S]`` tensors; ``(values, defined)`` (undefined rows -> 0)."""
    check_choice("correlation", kind, CORRELATIONS)
    a, b = a.double(), b.double()
    if kind == "spearman":
        a, b = average_ranks(a), average_ranks(b)
    return _pearson(a, b)


def mu_fidelity(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor,
                indices: torch.Tensor | None = None, *, grid: int = 9, subset: float = 0.2, samples: int = 200,
                baseline: str | float = 0.0, score: str = "logit", correlation: str = "pearson", seed: int = 0,
                max_batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mu-fidelity ``[B]`` and whether each correlation was defined ``[B]``."""
    b, _, h, w = images.shape
    indices = torch.arange(b, device=images.device) if indices is None else indices
    cells = subset_masks(indices, grid=grid, subset=subset, samples=samples, seed=seed, device=images.device)

    def pixels(start: int, stop: int) -> torch.Tensor:
        small = cells[:, start:stop].float()
        return F.interpolate(small, size=(h, w), mode="nearest-exact") > 0.5

    perturber = Perturber(model, fill=check_fill(baseline), removal="fill", max_batch=max_batch, indices=indices)
    everything = torch.ones(b, 1, h, w, dtype=torch.bool, device=images.device)
    clean = target_scores(perturber.logits(images, 1, lambda start, stop: everything), targets, score)
    masked = target_scores(perturber.logits(images, samples, pixels), targets, score)
    drops = clean - masked  # [B, S]
    return rowwise_correlation(_removed_attribution(maps, pixels, samples), drops, correlation)


def _removed_attribution(maps: torch.Tensor, pixels, samples: int, chunk: int = 64) -> torch.Tensor:
    """``sum(phi * removed)`` ``[B, S]``, built chunk by chunk like the masks themselves."""
    parts = []
    for start in range(0, samples, chunk):
        keep = pixels(start, min(samples, start + chunk))
        parts.append((maps.double()[:, None] * (~keep)).flatten(2).sum(-1))
    return torch.cat(parts, dim=1)


@register_metric("mu_fidelity")
class MuFidelity(AttributionMetric):
    """Mean correlation between removed attribution and score drop over random subsets (higher is better)."""

    needs_model = True
    directions = {"mu_fidelity": "higher"}
    diagnostics = ("degenerate",)

    def __init__(self, model: nn.Module | None = None, *, grid: int = 9, subset: float = 0.2, samples: int = 200,
                 baseline: str | float = 0.0, score: str = "logit", correlation: str = "pearson", seed: int = 0,
                 max_batch: int = 256):
        super().__init__(model)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ConfigError(f"grid must be a positive integer (Xplique: 9), got {grid!r}.")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
            raise ConfigError(f"samples must be an integer >= 2 (Xplique: 200), got {samples!r}.")
        self.grid, self.samples, self.seed, self.max_batch = grid, samples, int(seed), max_batch
        self.subset = check_fraction("subset", subset, allow_one=False)
        self.baseline = check_fill(baseline)
        self.score = check_choice("score", score, ("softmax", "logit"))
        self.correlation = check_choice("correlation", correlation, CORRELATIONS)
        self._record(grid=grid, subset=self.subset, samples=samples, baseline=self.baseline, score=score,
                     correlation=correlation, seed=self.seed, upsampling="nearest-exact (TF half-pixel nearest)")
        self._add_sum("corr_sum")
        self._add_sum("degenerate")
        self._add_sum("count")
        self._track_per_image("corr_sum", "degenerate", "count")

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        corr, defined = mu_fidelity(self.model, batch.images, batch.maps, batch.targets, batch.indices, grid=self.grid,
                                    subset=self.subset, samples=self.samples, baseline=self.baseline, score=self.score,
                                    correlation=self.correlation, seed=self.seed, max_batch=self.max_batch)
        self._accumulate_rows({"corr_sum": corr, "degenerate": (~defined).double(),
                               "count": torch.ones(batch.size, dtype=torch.float64)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return {"mu_fidelity": self.corr_sum / n, "degenerate": self.degenerate.clone()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"mu_fidelity": sums["corr_sum"] / sums["count"], "degenerate": sums["degenerate"]}
