"""Stability across models trained on different data (the super-pixel paper's metrics).

Both metrics take the other model(s) at construction and re-run the evaluated attributor on them
through ``explain(images, targets, model=other)``; the evaluated model's maps are ``batch.maps``.
The class explained is ``batch.targets`` for every model (the sister code uses the ground-truth
label: run the evaluation with ``target=label`` to match).

- **SSIM stability** (``ssim_stability``): SSIM between the evaluated model's and ``other``'s maps
  of each image (two models trained on disjoint halves of the data), after PAIR's grayscale
  conversion (|map|, clipped at the 99th percentile, scaled to [0, 1]); skimage settings
  ``data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False`` (see
  :mod:`reproduce.metrics.ssim`). Mean over images, in %. Higher is better.
- **MeGe** and **ReCo** (``mege``; Fel et al., WACV 2022, with Xplique's ``MeGe`` as the reference
  implementation): for every pair of models (evaluated + ``others``) and image where at least one
  of the two is correct, the distance between their maps goes to ``S=`` when both predict the same
  class (both correct) and to ``S!=`` otherwise (exactly one correct). MeGe = 1 / (1 + mean of
  ``S=``), in %; ReCo = the best ``TPR + TNR - 1`` over thresholds ``gamma`` separating ``S=``
  (``d < gamma``) from ``S!=`` (``d > gamma``), at Xplique's thresholds (every
  ``len // 20 + 1``-th of the pooled sorted distances), in %. Both higher is better. MeGe is NaN
  (undefined) when no pair classifies an image correctly together (``pairs = 0``); ReCo is 0 when
  one of the two sets is empty (as Xplique) and NaN when both are.

  Distance (``distance``): ``"l2"`` (default; the super-pixel rebuttal's "L2-norm") between maps
  normalised by ``map_normalization``: ``"minmax"`` (default: each map to [0, 1]; the L2 distance
  then grows with the number of pixels, so values are comparable only at one resolution),
  ``"l2"`` (unit L2 norm: distances in [0, 2] at any resolution) or ``"none"``. ``"spearman"`` is
  Xplique's ``sqrt(1 - |rho|)``; where rho is undefined (a constant map) the pair is dropped, as
  Xplique drops NaN distances, and counted in ``undefined``.

  Points (``points``): ``"test"`` (default) compares every pair on images no model was trained on.
  ``"held_out"`` is Fel et al.'s protocol: images of the training data, each paired only between a
  model that saw it and the one that did not; the batch must carry ``extra["held_out_by"]``
  ``[B]``, the index (0 = the evaluated model, ``i`` = ``others[i - 1]``) of the model that did not
  train on the image, and only pairs containing that model count (Xplique's ``split_id in [i, j]``).
  With two models trained on disjoint halves, every training image is held out by exactly one of
  them, so every training image counts once.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import torch
from torch import nn

from reproduce.errors import ConfigError, InputError
from reproduce.checks import check_choice
from reproduce.metrics.base import EXPLAIN, EXTRA, AttributionBatch, AttributionMetric, Explain, describe_model, ones
from reproduce.metrics.mu_fidelity import average_ranks
from reproduce.metrics.pxap import normalize_01
from reproduce.metrics.registry import register_metric
from reproduce.metrics.ssim import grayscale, ssim
from reproduce.models import inference_state

MEGE_NORMALIZATIONS = ("minmax", "l2", "none")
DISTANCES = ("l2", "spearman")


def ssim_stability(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM ``[B]`` of the grayscale-converted maps of two models."""
    return ssim(grayscale(maps_a), grayscale(maps_b), data_range=1.0, sigma=1.5)


def normalize_for_distance(maps: torch.Tensor, how: str) -> torch.Tensor:
    check_choice("map_normalization", how, MEGE_NORMALIZATIONS)
    if how == "minmax":
        return normalize_01(maps, "minmax")
    flat = maps.double().flatten(1)
    if how == "l2":
        norm = flat.norm(dim=1, keepdim=True)
        flat = flat / torch.where(norm > 0, norm, torch.ones_like(norm))
    return flat.view_as(maps)


def map_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "l2", normalization: str = "minmax") -> torch.Tensor:
    """Per-image distance ``[B]`` between two models' maps."""
    check_choice("distance", distance, DISTANCES)
    if distance == "spearman":
        ra, rb = average_ranks(a.double().flatten(1)), average_ranks(b.double().flatten(1))
        ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
        denom = ra.norm(dim=1) * rb.norm(dim=1)
        # Undefined for a constant map (NaN, as scipy's spearmanr): callers drop such pairs.
        rho = torch.where(denom > 0, (ra * rb).sum(1) / torch.where(denom > 0, denom, torch.ones_like(denom)),
                          torch.full_like(denom, float("nan")))
        return (1 - rho.abs()).clamp_min(0).sqrt()
    na, nb = normalize_for_distance(a, normalization), normalize_for_distance(b, normalization)
    return (na - nb).flatten(1).norm(dim=1)


def pair_distances(maps: Sequence[torch.Tensor], predictions: torch.Tensor, labels: torch.Tensor, distance: str = "l2",
                   normalization: str = "minmax", held_out_by: torch.Tensor | None = None
                   ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per model pair (in :func:`itertools.combinations` order): ``(counted [B], same [B], d [B])``:
    whether the pair counts for each image (at least one of the two correct, and the image held out
    by one of them under ``held_out_by``), whether both predict the same class, and the distance of
    their maps (NaN where it is not counted or undefined)."""
    out = []
    for i, j in combinations(range(len(maps)), 2):
        pair = torch.ones_like(labels, dtype=torch.bool)
        if held_out_by is not None:
            pair = (held_out_by == i) | (held_out_by == j)
        counted = pair & ((predictions[i] == labels) | (predictions[j] == labels))
        d = torch.full(labels.shape, float("nan"), dtype=torch.float64, device=labels.device)
        if bool(counted.any()):
            d[counted] = map_distance(maps[i][counted], maps[j][counted], distance, normalization).double()
        out.append((counted, predictions[i] == predictions[j], d))
    return out


def mege_rows(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each image's contribution ``[B]`` to MeGe's sums: the summed ``S=`` distances, the number of
    ``S=`` and ``S!=`` distances, and of undefined (left out) distances, over the model pairs."""
    rows = {name: torch.zeros_like(pairs[0][2]) for name in ("distance_sum", "pairs", "pairs_unequal", "undefined")}
    for counted, same, d in pairs:
        defined = counted & torch.isfinite(d)
        rows["distance_sum"] += torch.where(defined & same, d, torch.zeros_like(d))
        rows["pairs"] += (defined & same).double()
        rows["pairs_unequal"] += (defined & ~same).double()
        rows["undefined"] += (counted & ~defined).double()
    return rows


def mege_pairs(maps: Sequence[torch.Tensor], predictions: torch.Tensor, labels: torch.Tensor, distance: str = "l2",
               normalization: str = "minmax", held_out_by: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Xplique's distance sets over model pairs: ``(S=, S!=, undefined count)``.

    ``maps``: one ``[B, H, W]`` per model; ``predictions``: ``[models, B]``; ``labels``: ``[B]``;
    ``held_out_by``: ``[B]`` index of the model that did not train on each image, or ``None`` (test
    images: every pair counts). Undefined distances (Spearman of a constant map) are left out.
    """
    return _distance_sets(pair_distances(maps, predictions, labels, distance, normalization, held_out_by))


def _distance_sets(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    eq = [d[counted & same & torch.isfinite(d)] for counted, same, d in pairs]
    ne = [d[counted & ~same & torch.isfinite(d)] for counted, same, d in pairs]
    undefined = sum(float((counted & ~torch.isfinite(d)).sum()) for counted, _, d in pairs)
    device = pairs[0][2].device if pairs else None
    empty = torch.zeros(0, dtype=torch.float64, device=device)
    return (torch.cat(eq) if eq else empty), (torch.cat(ne) if ne else empty), torch.tensor(undefined, dtype=torch.float64, device=device)


def reco_score(s_eq: torch.Tensor, s_ne: torch.Tensor) -> torch.Tensor:
    """ReCo in [0, 1] from the two distance sets, exactly as Xplique's ``MeGe.evaluate``."""
    total = torch.sort(torch.cat([s_eq, s_ne])).values
    if total.numel() == 0:
        return torch.zeros((), dtype=torch.float64)
    gammas = total[:: total.numel() // 20 + 1][:, None]
    tp, fn = (s_eq[None] < gammas).sum(1).double(), (s_eq[None] > gammas).sum(1).double()
    tn, fp = (s_ne[None] > gammas).sum(1).double(), (s_ne[None] < gammas).sum(1).double()
    youden = tp / (tp + fn + 1e-10) + tn / (tn + fp + 1e-10) - 1.0
    return youden.max().clamp_min(0.0).double()


def mege_reco(maps: Sequence[torch.Tensor], predictions: torch.Tensor, labels: torch.Tensor, distance: str = "l2",
              normalization: str = "minmax", held_out_by: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(MeGe, ReCo)`` in % over one set of images (the functional twin of :class:`MeGe`)."""
    s_eq, s_ne, _ = mege_pairs(maps, predictions, labels, distance, normalization, held_out_by)
    if s_eq.numel() == 0:
        raise InputError("MeGe is undefined: no image was classified correctly by two of the models.")
    return 100 / (1 + s_eq.mean()), 100 * reco_score(s_eq, s_ne)


def _as_model_list(others, name: str) -> list[nn.Module]:
    models = [others] if isinstance(others, nn.Module) else list(others or [])
    if not models or not all(isinstance(m, nn.Module) for m in models):
        raise ConfigError(f"{name} must be a model (or a list of models) trained on other data, got {others!r}.")
    return models


@register_metric("ssim_stability")
class SSIMStability(AttributionMetric):
    """Mean SSIM (%) between the maps of the evaluated model and a model trained on other data."""

    requires = (EXPLAIN,)
    directions = {"ssim": "higher"}

    def __init__(self, model=None, *, other: nn.Module | None = None):
        super().__init__(model)
        self._others = _as_model_list(other, "other")[:1]
        self._record(other=describe_model(self._others[0]), grayscale="|map|, clip at p99, scale to [0, 1]",
                     ssim="data_range=1, gaussian sigma=1.5, population covariance")
        self._add_sum("ssim_sum")
        self._add_sum("count")
        self._track_per_image("ssim_sum", "count")  # 16 bytes per image

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        other_maps = self._explain(explain, batch.images, batch.targets, batch, model=self._others[0])
        values = ssim_stability(batch.maps, other_maps)
        self._accumulate_rows({"ssim_sum": values.double(), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"ssim": 100 * self.ssim_sum / self._require_samples(self.count)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"ssim": 100 * sums["ssim_sum"] / sums["count"]}


POINTS = ("test", "held_out")
HELD_OUT = "held_out_by"


@register_metric("mege")
class MeGe(AttributionMetric):
    """MeGe and ReCo (%) of the maps of models trained on different data (see the module docstring)."""

    needs_model = True
    directions = {"mege": "higher", "reco": "higher"}
    diagnostics = ("pairs", "pairs_unequal", "undefined")

    def __init__(self, model: nn.Module | None = None, *, others: Sequence[nn.Module] | nn.Module | None = None,
                 distance: str = "l2", map_normalization: str = "minmax", points: str = "test"):
        super().__init__(model)
        self._others = _as_model_list(others, "others")
        self.distance = check_choice("distance", distance, DISTANCES)
        self.map_normalization = check_choice("map_normalization", map_normalization, MEGE_NORMALIZATIONS)
        self.points = check_choice("points", points, POINTS)
        self.requires = (EXPLAIN, f"{EXTRA}{HELD_OUT}") if points == "held_out" else (EXPLAIN,)
        self._record(others=[describe_model(m) for m in self._others], distance=distance,
                     map_normalization=map_normalization if distance == "l2" else None,
                     points="test images (unseen by every model)" if points == "test"
                     else "training images, each between a model that saw it and the one that did not",
                     pairs="S=: both correct; S!=: exactly one correct (Xplique)",
                     reco="max over Xplique's thresholds of TPR + TNR - 1")
        # ReCo needs the pooled distance sets themselves (one float per counted pair and image).
        self.add_state("s_eq", default=[], dist_reduce_fx="cat")
        self.add_state("s_ne", default=[], dist_reduce_fx="cat")
        for name in ("distance_sum", "pairs", "pairs_unequal", "undefined", "count"):
            self._add_sum(name)
        self._track_per_image("distance_sum", "pairs", "pairs_unequal", "undefined", "count")  # 40 bytes per image

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        models = [self.model, *self._others]
        maps = [batch.maps] + [self._explain(explain, batch.images, batch.targets, batch, model=m) for m in self._others]
        predictions = []
        for m in models:
            with inference_state(m), torch.no_grad():
                predictions.append(m(batch.images).argmax(-1))
        held_out = batch.extra[HELD_OUT].long() if self.points == "held_out" else None
        pairs = pair_distances(maps, torch.stack(predictions), batch.labels, self.distance, self.map_normalization,
                               held_out)
        s_eq, s_ne, _ = _distance_sets(pairs)
        self.s_eq.append(s_eq.to(self.count.device))
        self.s_ne.append(s_ne.to(self.count.device))
        self._accumulate_rows({**mege_rows(pairs), "count": ones(batch)}, batch.indices)

    no_interval = {"reco": "ReCo's thresholds are quantiles of the pooled distances, so it is no function of "
                           "per-image sums"}

    def _compute(self) -> dict[str, torch.Tensor]:
        self._require_samples(self.count)
        s_eq, s_ne = _gathered(self.s_eq), _gathered(self.s_ne)
        # ReCo follows Xplique (0 when one set is empty), NaN without distances.
        reco = 100 * reco_score(s_eq, s_ne) if s_eq.numel() + s_ne.numel() else torch.tensor(float("nan"), dtype=torch.float64)
        scalars = self._compute_batch({name: getattr(self, name)[None] for name in self._per_image_names})
        return {"mege": scalars["mege"][0], "reco": reco,
                **{name: getattr(self, name).clone() for name in ("pairs", "pairs_unequal", "undefined")}}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # No pair of equal correct predictions (e.g. barely trained models): MeGe is undefined and
        # reported as NaN with pairs = 0, so one such table cell reads "undefined" instead of
        # aborting the table.
        pairs = sums["pairs"]
        mean = sums["distance_sum"] / torch.where(pairs > 0, pairs, torch.ones_like(pairs))
        return {"mege": torch.where(pairs > 0, 100 / (1 + mean), torch.full_like(mean, float("nan"))),
                **{name: sums[name] for name in ("pairs", "pairs_unequal", "undefined")}}


def _gathered(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A ``cat`` state as one tensor (a list before synchronisation, a tensor after it)."""
    if isinstance(state, torch.Tensor):
        return state.double()
    return torch.cat(state).double() if state else torch.zeros(0, dtype=torch.float64)
