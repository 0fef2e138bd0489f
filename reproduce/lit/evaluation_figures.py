"""The figures of an evaluation cell: the overlays kept from its first images, gathered over DDP
ranks in dataset-index order, and the files and logger entries they become (``overlays.png``,
``maps.npz`` for the table's maps grid, ``stability.png`` beside the reference models' maps).

An overlay is a dict: ``image`` (denormalised, [0, 1]) ``[C, H, W]``, ``map`` ``[H, W]``,
``references`` (the reference models' maps ``[R, H, W]`` or None), ``mask`` (bool ``[H, W]`` or
None), ``label`` and ``index`` (the dataset index).
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch

from reproduce.lit.cell_states import MAPS_FILE
from reproduce.viz.map_grid import save_overlay_maps
from reproduce.viz.overlays import overlay_grid, stability_grid


def gather_overlays(module: L.LightningModule, overlays: list[dict[str, Any]], n: int,
                    references: int) -> list[dict[str, Any]]:
    """The first ``n`` overlays by dataset index over all ranks (collective: every rank calls it);
    ``references``: how many reference maps each overlay carries. Under DDP each rank sends a
    fixed-size padded stack."""
    if module.trainer.world_size == 1 or n == 0:
        return sorted(overlays, key=lambda o: o["index"])
    # Every rank must send tensors of one shape: the image size comes from the first batch of
    # the (shared) test set, which every rank with at least one overlay agrees on.
    device = module.device
    shape = torch.tensor(list(overlays[0]["image"].shape) if overlays else [0, 0, 0], device=device)
    c, h, w = (int(v) for v in module.all_gather(shape).reshape(-1, 3).max(0).values)
    if c == 0:
        return []
    image = torch.zeros(n, c, h, w, device=device)
    amap = torch.zeros(n, h, w, device=device)
    refs = torch.zeros(n, references, h, w, device=device)
    mask = torch.zeros(n, h, w, device=device)
    meta = torch.full((n, 4), -1, dtype=torch.long, device=device)  # valid, index, label, has_mask
    for i, o in enumerate(overlays):
        image[i], amap[i] = o["image"], o["map"]
        if o["references"] is not None:
            refs[i] = o["references"]
        if o["mask"] is not None:
            mask[i] = o["mask"].float()
        meta[i] = torch.tensor([1, o["index"], o["label"], int(o["mask"] is not None)])
    image, amap, refs, mask, meta = (module.all_gather(t).flatten(0, 1).cpu() for t in (image, amap, refs, mask, meta))
    valid = (meta[:, 0] == 1).nonzero().flatten()
    order = valid[meta[valid, 1].argsort()][:n]
    return [{"image": image[i], "map": amap[i], "references": refs[i] if references else None,
             "mask": mask[i].bool() if meta[i, 3] == 1 else None,
             "label": int(meta[i, 2]), "index": int(meta[i, 1])} for i in order.tolist()]


def write_figures(folder: str, overlays: list[dict[str, Any]], title: str,
                  references: list[str]) -> tuple[str | None, str | None]:
    """Write ``overlays.png``, ``maps.npz`` and (with ``references``, the reference models' names)
    ``stability.png`` into ``folder``; returns the paths of the two figures (None when not written)."""
    if not overlays:
        return None, None
    figure_path = os.path.join(folder, "overlays.png")
    overlay_grid(overlays, title=title, path=figure_path)
    save_overlay_maps(os.path.join(folder, MAPS_FILE), overlays)  # the table's maps grid
    if not references:
        return figure_path, None
    stability_path = os.path.join(folder, "stability.png")
    stability_grid(overlays, ["explained", *references], title=title, path=stability_path)
    return figure_path, stability_path


def log_result(loggers: list[Any], scalars: dict[str, float], curves: dict[str, list[float]],
               figure_path: str | None, stability_path: str | None) -> None:
    """Scalars to every logger (``eval/<key>``); curves and figures to W&B loggers."""
    for logger in loggers:
        logger.log_metrics({f"eval/{k}": v for k, v in scalars.items()})
        if type(logger).__name__ == "WandbLogger":
            for key, values in curves.items():
                if key.endswith("_x"):
                    continue
                xs = curves.get(f"{key}_x", list(range(len(values))))
                logger.log_table(key=f"curves/{key}", columns=["x", "y"], data=[list(p) for p in zip(xs, values)])
            if figure_path:
                logger.log_image(key="overlays", images=[figure_path])
            if stability_path:
                logger.log_image(key="stability", images=[stability_path])
