"""Localisation against ground-truth masks: pointing game, energy pointing game, IoU-AUC.

(PxAP lives in :mod:`reproduce.metrics.pxap`.) Empty ground-truth masks are an error naming the
samples, never skipped silently.

- **Pointing game** (Zhang et al. 2016; TorchRay's benchmark): a hit when the map's maximum lies
  within ``tolerance`` pixels of a mask pixel (TorchRay: squared distance ``< tolerance**2``; a
  point inside the mask always hits, so ``tolerance=0`` means "inside"). The default tolerance is
  TorchRay's 15 px scaled to the image: ``15 * max(H, W) / 224``. Ties of the maximum (every
  region-constant map has them: patches, super-pixels, SMDL regions, saturated masks):

  - ``ties="centroid"`` (default): the point is the maximum pixel nearest to the centroid of the
    set of maxima (nearest by Euclidean distance; equally near pixels in raster order). A map
    whose best region is convex points at that region's centre; the point is always a maximum of
    the map, also when the maxima form several blobs (their centroid may lie on none of them).
  - ``ties="first"``: the first maximum in raster order (TorchRay's ``argmax``): a region-constant
    map points at the top-left pixel of its best region, which biases the game against exactly
    those maps (a constant map hits only if the mask reaches the image's corner).
  - ``ties="any"``: hits when any maximum hits (Quantus' ``PointingGame``): a constant map always hits.

  Without ties the three rules agree.
- **Energy pointing game** (Score-CAM, Wang et al. 2020): the fraction of the map's positive energy
  ``sum(relu(map) * mask) / sum(relu(map))`` inside the mask. A map with no positive energy scores
  0 and is counted in the ``zero_energy`` diagnostic.
- **IoU-AUC** (COMET's flower evaluation): binarise the (normalised) map at ``map > threshold``,
  IoU with the mask per image, then the area under "fraction of images with IoU >= t" for
  ``t = 0, 1/n, ..., 1`` (``n = 20000`` as the code; trapezoid rule), which is about the mean IoU.
  COMET fixes one threshold per method (0.6 CAM, 0.9 COMET, 0.5 RBF, 0.95 post-hoc, 0.1 B-cos);
  by default a grid ``0.1..0.9`` is evaluated and ``iou_auc`` is the best over it (with
  ``best_threshold``), the full per-threshold values in the ``iou_auc_by_threshold`` curve.
"""

from __future__ import annotations

import math

import torch

from reproduce.errors import ConfigError
from reproduce.checks import check_choice
from reproduce.metrics.base import MASKS, AttributionBatch, AttributionMetric, ones
from reproduce.metrics.pxap import NORMALIZATIONS, check_nonempty_masks, normalize_01
from reproduce.metrics.registry import register_metric

TORCHRAY_TOLERANCE = 15.0
TORCHRAY_SIZE = 224.0


def default_tolerance(height: int, width: int) -> float:
    """TorchRay's 15 px at 224 px, scaled to the image size."""
    return TORCHRAY_TOLERANCE * max(height, width) / TORCHRAY_SIZE


TIE_RULES = ("centroid", "first", "any")


def pointing_points(maps: torch.Tensor, ties: str = "centroid") -> torch.Tensor:
    """Boolean ``[B, H*W]``: the pixel(s) each map points at under the tie rule ``ties``."""
    check_choice("ties", ties, TIE_RULES)
    b, h, w = maps.shape
    flat = maps.flatten(1)
    points = flat == flat.max(1, keepdim=True).values
    if ties == "first":  # the first maximum in raster order, explicitly (argmax promises no tie order)
        points = points & (torch.cumsum(points.long(), 1) == 1)
    elif ties == "centroid":
        ys = torch.arange(h, device=maps.device, dtype=torch.float64).repeat_interleave(w)
        xs = torch.arange(w, device=maps.device, dtype=torch.float64).repeat(h)
        weight = points.double()
        count = weight.sum(1, keepdim=True)
        cy, cx = (weight * ys).sum(1, keepdim=True) / count, (weight * xs).sum(1, keepdim=True) / count
        distance = torch.where(points, (ys - cy) ** 2 + (xs - cx) ** 2, torch.full_like(weight, float("inf")))
        nearest = distance.argmin(1)  # the first of equally near maxima (raster order)
        points = torch.zeros_like(points).scatter_(1, nearest[:, None], True)
    return points


def pointing_hits(maps: torch.Tensor, masks: torch.Tensor, *, tolerance: float | None = None,
                  ties: str = "centroid") -> torch.Tensor:
    """Per-image hits ``[B]`` (bool) of the pointing game."""
    check_choice("ties", ties, TIE_RULES)
    b, h, w = maps.shape
    tol = default_tolerance(h, w) if tolerance is None else float(tolerance)
    if tol < 0:
        raise ConfigError(f"tolerance must be >= 0 pixels, got {tolerance!r}.")
    points = pointing_points(maps, ties)
    near = _within(masks.view(b, 1, h, w).float(), tol).view(b, -1) > 0
    return (points & near).any(1)


def _within(masks: torch.Tensor, tol: float) -> torch.Tensor:
    """Pixels whose squared distance to a mask pixel is ``< tol**2``, or that lie in the mask."""
    r = int(math.ceil(tol))
    if r == 0:
        return masks
    offsets = torch.arange(-r, r + 1, device=masks.device, dtype=torch.float64)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) < tol**2
    kernel = disk.to(masks.dtype)[None, None]
    reach = torch.nn.functional.conv2d(masks, kernel, padding=r)
    return ((reach > 0) | (masks > 0)).to(masks.dtype)


def energy_inside(maps: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fraction [B], has_energy [B])``: share of ``relu(map)`` inside the mask (0 without energy)."""
    energy = maps.double().clamp_min(0).flatten(1)
    total = energy.sum(1)
    inside = (energy * masks.flatten(1)).sum(1)
    has = total > 0
    return torch.where(has, inside / torch.where(has, total, torch.ones_like(total)), torch.zeros_like(total)), has


def binary_iou(maps01: torch.Tensor, masks: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """IoU ``[B, T]`` of ``maps01 > threshold`` with the masks, for each threshold."""
    pred = maps01.flatten(1)[:, None, :] > thresholds.to(maps01)[None, :, None]
    gt = masks.flatten(1)[:, None, :]
    inter = (pred & gt).sum(-1).double()
    union = (pred | gt).sum(-1).double()
    return inter / union  # masks are non-empty, so union > 0


def iou_grid(step: float) -> torch.Tensor:
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1:
        raise ConfigError(f"iou_step must be 1/n for an integer n >= 1 (e.g. 1/20000), got {step!r}.")
    n = int(round(1 / step))
    if n < 1 or abs(n * step - 1) > 1e-6:
        raise ConfigError(f"iou_step must be 1/n for an integer n (e.g. 1/20000), got {step!r}.")
    return torch.linspace(0, 1, n + 1, dtype=torch.float64)


def iou_survival_auc(ious: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Each image's own area under ``t -> 1[IoU >= t]`` over ``grid`` (trapezoid): ``[B, T]``.

    The area under "fraction of images with IoU >= t" is linear in the images, so the pooled IoU-AUC
    of a set is the mean of these (per image: every grid segment below its IoU's grid cell counts
    whole, the segment it falls in half: ``grid[k] + (grid[k+1] - grid[k]) / 2`` for
    ``grid[k] <= IoU < grid[k+1]``, and 1 at IoU = 1).
    """
    grid = grid.to(device=ious.device, dtype=torch.float64)
    k = torch.bucketize(ious.double(), grid, right=True) - 1  # grid[k] <= iou < grid[k + 1]
    upper = grid[(k + 1).clamp(max=grid.numel() - 1)]
    return grid[k] + (upper - grid[k]) / 2


def iou_auc(maps: torch.Tensor, masks: torch.Tensor, *, thresholds=(0.5,), iou_step: float = 1 / 20000,
            map_normalization: str = "minmax") -> torch.Tensor:
    """IoU-AUC ``[T]`` per binarisation threshold, over the batch."""
    grid = iou_grid(iou_step)
    th = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
    ious = binary_iou(normalize_01(maps, map_normalization), masks.bool(), th)
    return iou_survival_auc(ious, grid).mean(0)


@register_metric("pointing_game")
class PointingGame(AttributionMetric):
    """Fraction of images whose map maximum hits the ground-truth mask (higher is better)."""

    requires = (MASKS,)
    directions = {"accuracy": "higher"}

    def __init__(self, model=None, *, tolerance: float | None = None, ties: str = "centroid"):
        super().__init__(model)
        if tolerance is not None and float(tolerance) < 0:
            raise ConfigError(f"tolerance must be >= 0 pixels, got {tolerance!r}.")
        self.tolerance = tolerance
        self.ties = check_choice("ties", ties, TIE_RULES)
        rules = {"centroid": "the maximum nearest to the centroid of the maxima", "first": "first maximum in raster order",
                 "any": "a hit when any maximum hits"}
        self._record(tolerance=tolerance if tolerance is not None else "15 px at 224, scaled", ties=ties,
                     tie_rule=rules[ties],
                     hit="squared distance < tolerance^2, or inside the mask")
        self._add_sum("hits")
        self._add_sum("count")
        self._track_per_image("hits", "count")  # 16 bytes per image

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        check_nonempty_masks(batch)
        hits = pointing_hits(batch.maps, batch.masks, tolerance=self.tolerance, ties=self.ties)
        self._accumulate_rows({"hits": hits.double(), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": self.hits / self._require_samples(self.count)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"accuracy": sums["hits"] / sums["count"]}


@register_metric("energy_pointing_game")
class EnergyPointingGame(AttributionMetric):
    """Mean share of the positive map energy inside the ground-truth mask (higher is better)."""

    requires = (MASKS,)
    directions = {"energy": "higher"}
    diagnostics = ("zero_energy",)

    def __init__(self, model=None, *, map_normalization: str = "none"):
        super().__init__(model)
        self.map_normalization = check_choice("map_normalization", map_normalization, NORMALIZATIONS)
        self._record(map_normalization=map_normalization, energy="relu(map)")
        self._add_sum("energy_sum")
        self._add_sum("zero_energy")
        self._add_sum("count")
        self._track_per_image("energy_sum", "zero_energy", "count")  # 24 bytes per image

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        check_nonempty_masks(batch)
        maps = normalize_01(batch.maps, "minmax") if self.map_normalization == "minmax" else batch.maps
        fraction, has = energy_inside(maps, batch.masks)
        self._accumulate_rows({"energy_sum": fraction, "zero_energy": (~has).double(), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return {"energy": self.energy_sum / n, "zero_energy": self.zero_energy.clone()}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"energy": sums["energy_sum"] / sums["count"], "zero_energy": sums["zero_energy"]}


@register_metric("iou_auc")
class IoUAUC(AttributionMetric):
    """Area under the "fraction of images with IoU >= t" curve (higher is better)."""

    requires = (MASKS,)
    directions = {"iou_auc": "higher"}
    diagnostics = ("best_threshold",)

    def __init__(self, model=None, *, thresholds: float | tuple[float, ...] | list[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                 iou_step: float = 1 / 20000, map_normalization: str = "minmax"):
        super().__init__(model)
        th = [float(thresholds)] if isinstance(thresholds, (int, float)) else [float(t) for t in thresholds]
        if not th or any(not 0 <= t < 1 for t in th):
            raise ConfigError(f"thresholds must be values in [0, 1) (e.g. 0.5, or a grid), got {thresholds!r}.")
        self.map_normalization = check_choice("map_normalization", map_normalization, NORMALIZATIONS)
        self.register_buffer("thresholds", torch.tensor(th, dtype=torch.float64), persistent=False)
        self.register_buffer("grid", iou_grid(iou_step), persistent=False)
        self._record(thresholds=th, iou_step=iou_step, map_normalization=map_normalization, binarise="map > threshold")
        # Per image its own survival AUC per threshold (8 x (T + 1) bytes: 80 for the default 9
        # thresholds), not an IoU histogram per threshold (8 x T x (n + 1): 1.4 MB at n = 20000).
        self._add_sum("auc_sum", (len(th),))
        self._add_sum("count")
        self._track_per_image("auc_sum", "count")

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        check_nonempty_masks(batch)
        ious = binary_iou(normalize_01(batch.maps, self.map_normalization, batch.indices), batch.masks, self.thresholds)
        self._accumulate_rows({"auc_sum": iou_survival_auc(ious, self.grid), "count": ones(batch)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        per_threshold = self.auc_sum / self._require_samples(self.count)
        best = int(torch.argmax(per_threshold))
        return {
            "iou_auc": per_threshold[best],
            "best_threshold": self.thresholds[best].clone(),
            "iou_auc_by_threshold": per_threshold,
            "iou_auc_by_threshold_x": self.thresholds.clone(),
        }

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        per_threshold = sums["auc_sum"] / sums["count"][:, None]
        best = per_threshold.argmax(1)  # the first maximum, as torch.argmax in _compute
        return {"iou_auc": per_threshold.gather(1, best[:, None])[:, 0],
                "best_threshold": self.thresholds.to(per_threshold)[best]}
