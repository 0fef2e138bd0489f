"""SMDL's sub-region division: the players of its set game (conventions in
:mod:`reproduce.attributors.smdl`).

- ``prior_patch``: a prior saliency map, resized bilinearly to ``grid x grid`` cells (as
  ``cv2.resize``), cells sorted by saliency (descending, ties by index) and cut into groups of
  ``per_region``; cells map to pixels as a nearest resize.
- ``patch``: every cell is a region; ``superpixel``: the segments of a segmenter.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.attributors.base import Attributor
from reproduce.attributors.registry import create
from reproduce.attributors.setgame import partitions_by_size
from reproduce.errors import ConfigError, InputError, ReproduceError
from reproduce.models import Partition

DIVISIONS = ("prior_patch", "patch", "superpixel")

Prior = Attributor | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def prior_division(prior: torch.Tensor, grid: int, per_region: int) -> torch.Tensor:
    """Region label per pixel ``[B, H, W]`` from a prior map ``[B, H, W]`` (module docstring)."""
    b, h, w = prior.shape
    cells = F.interpolate(prior[:, None].float(), size=(grid, grid), mode="bilinear", align_corners=False, antialias=False)
    ranked = torch.sort(cells.flatten(1), dim=1, descending=True, stable=True).indices  # [B, G^2]
    region_of_rank = torch.arange(grid * grid, device=prior.device) // per_region
    region_of_cell = torch.empty_like(ranked).scatter_(1, ranked, region_of_rank.expand(b, -1))
    return region_of_cell.gather(1, cell_index(h, w, grid, prior.device).flatten().expand(b, -1)).view(b, h, w)


def cell_index(height: int, width: int, grid: int, device=None) -> torch.Tensor:
    """``[H, W]`` grid cell of each pixel, as a nearest resize of the ``grid x grid`` map."""
    rows = torch.arange(height, device=device) * grid // height
    cols = torch.arange(width, device=device) * grid // width
    return rows[:, None] * grid + cols[None, :]


def region_count(division: str, grid: int, per_region: int) -> int | None:
    """Regions of a grid division (known before any image); None for super-pixels."""
    return {"prior_patch": grid * grid // per_region, "patch": grid * grid}.get(division)


def build_prior(model: nn.Module, prior, options: dict[str, Any], own_name: str) -> Prior:
    """The prior attributor: a registry name (built for ``model`` with ``options``), an
    :class:`Attributor` or a function ``(inputs, target) -> maps``."""
    if isinstance(prior, str):
        if prior == own_name:
            raise ConfigError("SMDL cannot be its own prior; choose another attributor (e.g. 'hsic').")
        return create(prior, model, **options)
    if options:
        raise ConfigError("prior_options only apply to a prior given by name.")
    if isinstance(prior, Attributor) or callable(prior):
        return prior
    raise ConfigError(f"prior must be an attributor name, an Attributor or a function, got {type(prior).__name__}.")


def prior_map(prior: Prior, name: str, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The prior's maps ``[B, H, W]``, checked (shape, finite) with errors naming the prior."""
    try:
        maps = prior.attribute(x, target) if isinstance(prior, Attributor) else prior(x, target)
    except InputError:
        raise
    except ReproduceError as err:
        raise InputError(f"SMDL's prior {name!r} failed: {err} Choose another prior or division='patch'.") from err
    expected = tuple(x.shape[:1] + x.shape[-2:])
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != expected:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise InputError(f"SMDL's prior {name!r} returned {shape}, expected maps {expected}.")
    if not torch.isfinite(maps).all():
        bad = (~torch.isfinite(maps)).flatten(1).any(1).nonzero().flatten().tolist()
        raise InputError(
            f"SMDL's prior {name!r} returned NaN/Inf maps for samples {bad[:8]}; the regions "
            "cannot be ranked. Choose another prior or division='patch'."
        )
    return maps


def divide(smdl, x: torch.Tensor, target: torch.Tensor) -> list[tuple[torch.Tensor, Partition]]:
    """The players of every image under ``smdl.division``, grouped by count."""
    b, _, h, w = x.shape
    g = smdl.division_grid
    if smdl.division == "superpixel":
        return partitions_by_size(smdl.segmenter(x, smdl.adapter.data_config))
    if g > h or g > w:
        raise InputError(f"grid={g} has more cells per side than the {h}x{w} image; use a smaller grid.")
    everyone = torch.arange(b, device=x.device)
    if smdl.division == "patch":
        return [(everyone, Partition(labels=cell_index(h, w, g, x.device).expand(b, h, w), num_players=g * g))]
    labels = prior_division(prior_map(smdl.prior, smdl.prior_name, x, target), g, smdl.per_region)
    return [(everyone, Partition(labels=labels, num_players=g * g // smdl.per_region))]
