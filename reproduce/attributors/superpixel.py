"""Super-pixel grouping of any attributor (super-pixel-based stable interpretation, BMVC 2024).

``create("superpixel", model, base="integrated_gradients", segmenter="slic")`` segments each image
into super-pixels (:mod:`reproduce.attributors.segmenters`, cached), adds up the base method's
attribution over each segment and paints every pixel of a segment with its segment's value.

Where the grouping happens depends on the base, through its public
:meth:`~reproduce.attributors.base.Attributor.group_input` and
:meth:`~reproduce.attributors.base.Attributor.finish_grouped` hooks:

- gradient methods (``saliency``, ``input_x_gradient``, ``integrated_gradients``): the *signed*
  attribution is summed over the segment's pixels and channels before the base's ``abs``, so the
  value of segment G is the exact derivative of the logit w.r.t. shifting all of G
  (``s_G = sum_{i in G} sum_c df/dx_{c,i}``) for saliency, and the integrated gradient of the
  segment (completeness holds) for IG. The base's ``channel_reduction`` is not used: a segment
  shift moves every channel.
- noise tunnels (``smoothgrad``, ``sparsified_smoothgrad``): each noisy copy is grouped in the same
  way through the tunnel's per-sample hook, before its ``abs`` and sparsification, as the paper
  requires for Sparsified SmoothGrad. For a tunnel without nonlinearity (``abs=False``, no
  sparsification) grouping each copy equals grouping the average, since grouping is linear; the
  per-copy route costs one extra scatter per pass, so it is used for every tunnel.
- any other method (CAMs, perturbation methods...): its final map is summed over each segment.

``reduce="sum"`` paints the segment total ``S_G`` on each pixel of G (the paper's grouped
gradient; the segment values add up to the base map's total). ``reduce="mean"`` paints
``S_G / |G|``, which conserves the pixel map's total. The grouping is one batched ``scatter_add``
on the inputs' device.

With a memo (:meth:`SuperPixel.use_memo`, an :class:`~reproduce.attributors.memo.AttributionMemo`),
the base's attribution before grouping is computed once per model, images and targets and shared by
every super-pixel attributor with the same base and base options (the segmenter rows of a table).
Evaluations give the memo only to the attributors of reference models (the stability metrics' model
B): the explained model's map is always computed, because its time is the cost column.
"""

from __future__ import annotations

import time
import json
from typing import Any, ClassVar

import torch
from torch import nn

from reproduce.checks import check_choice
from reproduce.attributors.base import Attributor
from reproduce.attributors.memo import AttributionMemo
from reproduce.attributors.registry import create, get_class, register
from reproduce.attributors.segmenters import SegmentationCache, Segmenter
from reproduce.errors import ConfigError

REDUCE_CHOICES = ("sum", "mean")


def group_maps(maps: torch.Tensor, labels: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """Paint each segment of ``labels`` with the sum (or mean) of ``maps`` over it.

    Args:
        maps: ``[B, ..., H, W]`` (e.g. ``[B, H, W]`` maps or ``[B, m, H, W]`` noisy copies).
        labels: ``[B, H, W]`` segment ids in ``0..H*W-1`` per image (shared by the middle dims).
        reduce: ``"sum"`` or ``"mean"``.
    Returns:
        a tensor like ``maps``, constant on every segment.
    """
    check_choice("reduce", reduce, REDUCE_CHOICES)
    b, h, w = labels.shape
    flat = maps.reshape(b, -1, h * w)
    index = labels.reshape(b, 1, h * w).expand_as(flat)
    # H*W slots bound the number of segments without a device->host sync to read it.
    sums = flat.new_zeros(b, flat.shape[1], h * w).scatter_add_(2, index, flat)
    if reduce == "mean":
        sizes = flat.new_zeros(b, h * w).scatter_add_(1, labels.reshape(b, h * w), flat.new_ones(b, h * w))
        sums = sums / sizes.clamp_min(1).unsqueeze(1)
    return sums.gather(2, index).view_as(maps)


@register("superpixel")
class SuperPixel(Attributor):
    """Super-pixel grouped version of any registered attributor (see the module docstring).

    Args:
        base: registry name of the method to group (``integrated_gradients`` by default).
        base_options: options of the base method.
        segmenter: ``slic``, ``quickshift``, ``felzenszwalb`` or ``watershed``.
        segmenter_options: parameters of the segmenter (defaults depend on the image size; see
            :mod:`reproduce.attributors.segmenters`).
        reduce: ``"sum"`` (segment total on each pixel) or ``"mean"`` (total / segment size).
        cache: a :class:`SegmentationCache`; the process-wide cache by default, so every
            super-pixel attributor explaining the same images segments them once.

    ``last_cost`` adds ``segmentation_seconds_per_image`` (included in ``seconds_per_image``).
    """

    # Watershed on a Sobel gradient gives about ``markers`` segments even on noise images.
    smoke_options: ClassVar[dict] = {"base": "saliency", "segmenter": "watershed"}

    @classmethod
    def smoke_config(cls, options: dict[str, Any]) -> dict[str, Any]:
        # The base method and segmenter define the row (e.g. super-pixel IG with quickshift): keep
        # them and make only the base method fast.
        base = options.get("base", "integrated_gradients")
        base_options = {**(options.get("base_options") or {}), **get_class(base).smoke_options}
        return {**options, "base": base, "base_options": base_options}

    def __init__(
        self,
        model: nn.Module,
        base: str = "integrated_gradients",
        base_options: dict[str, Any] | None = None,
        segmenter: str = "slic",
        segmenter_options: dict[str, Any] | None = None,
        reduce: str = "sum",
        cache: SegmentationCache | None = None,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        base_options = dict(base_options or {})
        if base == self.name:
            raise ConfigError("superpixel cannot wrap itself; choose a pixel-level base method.")
        if "normalize" in base_options:
            raise ConfigError("Set normalize on superpixel itself, not in base_options: grouping needs the raw map.")
        check_choice("reduce", reduce, REDUCE_CHOICES)
        self.base: Attributor = create(base, model, **base_options)
        self.segmenter = Segmenter(segmenter, segmenter_options, cache)
        self.reduce = reduce
        self._segmentation_seconds = 0.0
        self.memo: AttributionMemo | None = None
        # The base's group_input depends on its name and options only (and the weights, images, targets).
        self._memo_key = json.dumps({"base": base, "options": base_options}, sort_keys=True, default=repr)

    def segments(self, x: torch.Tensor) -> torch.Tensor:
        """Super-pixel labels ``[B, H, W]`` of ``x`` (cached)."""
        start = time.perf_counter()
        labels = self.segmenter(x, self.adapter.data_config)
        self._segmentation_seconds = time.perf_counter() - start
        return labels

    def use_memo(self, memo: AttributionMemo | None) -> None:
        """Share the base's attribution before grouping through ``memo`` (None: compute it each call)."""
        self.memo = memo

    def _group_input(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.memo is None:
            return self.base.group_input(x, target)
        found = self.memo.get(self._memo_key, self.model, x, target)
        if found is None:
            found = self.base.group_input(x, target)
            self.memo.put(self._memo_key, self.model, x, target, found)
        return found

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = self.segments(x)
        return self.base.finish_grouped(group_maps(self._group_input(x, target), labels, self.reduce))

    def extra_cost(self, batch_size: int) -> dict[str, float]:
        return {"segmentation_seconds_per_image": self._segmentation_seconds / batch_size}
