"""Feature coverage (COMET's "comprehensive" attribution): does the map's top region cover EVERY
part of the evidence, not just enough of it to classify?

On the two-part variant of the embedded benchmark a class is defined by two separate parts (each
part alone fits two classes), and the dataset gives one exact mask per part (``parts``
``[B, P, H, W]``, in part order; :class:`reproduce.data.synthetic.SyntheticShapes`). COMET's claim is
that its detector, which penalises evidence left outside the mask, makes the selector keep both
parts where a two-player selector-predictor keeps only what the predictor needs.

Rule, per image:

1. **Region** (``region``): the map's top region.

   - ``"top_fraction"`` (default): exactly ``round(fraction * H*W)`` pixels by rank (half-up),
     ties in a seeded random order per image (``seed`` and the dataset index; ``tie_break="raster"``:
     raster order), as the fidelity metric's rank selection
     (:func:`reproduce.metrics.fidelity.top_fraction_masks`). Every method gets the same budget, so
     coverage is never bought with a larger region, and the map's scale does not matter. The
     default 0.2 is the mask area COMET's area term allows (``R = max(area - tau, 0)`` with
     ``tau = 0.2`` in the two-part experiments): about 3x the two parts' mean area on the easy
     preset (6.7 % of the image), 7x on the hard one (2.9 %).
   - ``"threshold"``: the pixels with ``normalised map > threshold`` (``map_normalization``:
     ``"minmax"`` per map, or ``"none"`` for maps already in [0, 1] such as COMET's sigmoid masks,
     whose ``mask > 0.5`` is the mask COMET itself shows). The region's size is the method's own.

2. **Covered fraction** of part ``k``: the share of its pixels inside the region.
3. A part is **covered** when that share is at least ``min_covered`` (default 0.5: most of it);
   the image is covered when every part is.

Scalars: ``coverage`` = % of images with every part covered (higher), ``min_fraction`` = the mean
over images of the least-covered part's fraction (a continuous form of ``coverage``, higher),
``part<k>_fraction`` = the mean covered fraction of part ``k`` (1-based, in part order; higher) and
the diagnostic ``region_fraction`` = the mean share of the image in the region. Every scalar is a
mean of per-image values, so bootstrap intervals come from per-image states (8 x (P + 4) bytes per
image). Empty part masks are an error naming the samples, never skipped.
"""

from __future__ import annotations

import torch

from reproduce.checks import check_choice, check_fraction, check_int
from reproduce.errors import InputError
from reproduce.metrics.base import EXTRA, AttributionBatch, AttributionMetric, ones
from reproduce.metrics.fidelity import TIE_BREAKS, top_fraction_masks
from reproduce.metrics.pxap import NORMALIZATIONS, normalize_01
from reproduce.metrics.registry import register_metric

REGIONS = ("top_fraction", "threshold")
PARTS = "parts"


def top_region(maps: torch.Tensor, *, region: str = "top_fraction", fraction: float = 0.2, threshold: float = 0.5,
               map_normalization: str = "minmax", tie_break: str = "random", seed: int = 0,
               indices: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean ``[B, H, W]``: each map's top region under the rule ``region`` (module docstring)."""
    check_choice("region", region, REGIONS)
    if region == "top_fraction":
        return top_fraction_masks(maps, [fraction], "rank", tie_break=tie_break, seed=seed, indices=indices)[:, 0]
    return normalize_01(maps, map_normalization, indices) > threshold


def part_fractions(region: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """``[B, P]`` float64: the share of each part's pixels inside the region (parts non-empty)."""
    parts = parts.bool().flatten(2)
    inside = (parts & region.bool().flatten(1)[:, None, :]).sum(-1).double()
    return inside / parts.sum(-1).double()


def part_coverage(maps: torch.Tensor, parts: torch.Tensor, *, min_covered: float = 0.5, **region_knobs) -> torch.Tensor:
    """Bool ``[B]``: every part has at least ``min_covered`` of its pixels in the map's top region
    (``region_knobs``: those of :func:`top_region`)."""
    return (part_fractions(top_region(maps, **region_knobs), parts) >= min_covered).all(1)


@register_metric("part_coverage")
class PartCoverage(AttributionMetric):
    """% of images whose top region covers every evidence part, and the per-part covered fractions."""

    requires = (f"{EXTRA}{PARTS}",)
    diagnostics = ("region_fraction",)

    def __init__(self, model=None, *, parts: int = 2, region: str = "top_fraction", fraction: float = 0.2,
                 threshold: float = 0.5, map_normalization: str = "minmax", min_covered: float = 0.5,
                 tie_break: str = "random", seed: int = 0):
        super().__init__(model)
        self.parts = check_int("parts", parts, minimum=1)
        self.region = check_choice("region", region, REGIONS)
        self.min_covered = check_fraction("min_covered", min_covered)
        knobs = {"region": region}
        if region == "top_fraction":
            knobs.update(fraction=check_fraction("fraction", fraction), tie_break=check_choice("tie_break", tie_break, TIE_BREAKS),
                         seed=check_int("seed", seed, minimum=0))
            rule = "the top round(fraction * H*W) pixels by rank, ties in a seeded random order per image" \
                if tie_break == "random" else "the top round(fraction * H*W) pixels by rank, ties in raster order"
        else:
            knobs.update(threshold=check_fraction("threshold", threshold, open_low=False, allow_one=False),
                         map_normalization=check_choice("map_normalization", map_normalization, NORMALIZATIONS))
            rule = "pixels with normalised map > threshold"
        self._region_knobs = knobs
        self._record(parts=self.parts, **knobs, min_covered=self.min_covered, region_rule=rule,
                     covered=f"a part is covered when >= {self.min_covered:g} of its pixels lie in the region; "
                             "an image when every part is", coverage="% of images with every part covered")
        for name in ("covered", "min_fraction", "region_area", "count"):
            self._add_sum(name)
        self._add_sum("fraction_sum", (self.parts,))
        self._track_per_image("covered", "min_fraction", "region_area", "count", "fraction_sum")

    @property
    def directions(self) -> dict[str, str]:  # type: ignore[override]
        return {"coverage": "higher", "min_fraction": "higher", **{f"part{k + 1}_fraction": "higher" for k in range(self.parts)}}

    def _missing_message(self, need: str, source: str) -> str:
        if need == f"{EXTRA}{PARTS}":
            return (f"part_coverage needs one mask per evidence part (batch.extra['parts'] [B, P, H, W]), which "
                    f"{source} does not provide; evaluate it on the two-part benchmark (data=synthetic_two_part).")
        return super()._missing_message(need, source)

    def _parts_of(self, batch: AttributionBatch) -> torch.Tensor:
        parts = batch.extra[PARTS]
        b, h, w = batch.maps.shape
        if parts.dim() != 4 or tuple(parts.shape) != (b, self.parts, h, w):
            raise InputError(f"part_coverage: parts must be [B, P, H, W] = {(b, self.parts, h, w)} (parts={self.parts}), "
                             f"got {tuple(parts.shape)}; set parts= to the dataset's number of evidence parts.")
        parts = parts.to(batch.maps.device).bool()
        empty = ~parts.flatten(2).any(-1).all(1)
        if bool(empty.any()):
            raise InputError(f"part_coverage: samples {batch.names(empty.nonzero().flatten())[:10]} have an empty part "
                             "mask; coverage of a part with no pixels is undefined. Drop them or fix their masks.")
        return parts

    def _update(self, batch: AttributionBatch, explain=None) -> None:
        parts = self._parts_of(batch)
        region = top_region(batch.maps, **self._region_knobs, indices=batch.indices)
        fractions = part_fractions(region, parts)
        self._accumulate_rows({
            "covered": (fractions >= self.min_covered).all(1).double(),
            "min_fraction": fractions.min(1).values,
            "region_area": region.flatten(1).double().mean(1),
            "count": ones(batch),
            "fraction_sum": fractions,
        }, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        n = self._require_samples(self.count)
        return self._scalars(self.covered, self.min_fraction, self.region_area, self.fraction_sum, n)

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._scalars(sums["covered"], sums["min_fraction"], sums["region_area"], sums["fraction_sum"], sums["count"])

    def _scalars(self, covered, min_fraction, region_area, fraction_sum, n) -> dict[str, torch.Tensor]:
        """The scalars from sums (0-d, or ``[R]`` with ``fraction_sum`` ``[R, P]`` for a batch of sums)."""
        per_part = fraction_sum / (n[..., None] if isinstance(n, torch.Tensor) else n)
        return {"coverage": 100.0 * covered / n, "min_fraction": min_fraction / n, "region_fraction": region_area / n,
                **{f"part{k + 1}_fraction": per_part[..., k] for k in range(self.parts)}}
