"""What a scene of the synthetic benchmark is (its objects on the *object axis*, :class:`Layout`) and
the renderer that paints any subset of a scene's objects on its background.

A scene is, bottom to top: a textured background, the distractors, the evidence (one object, or two
parts in part-type order), and optionally an occluder (a distractor drawn over part of the evidence).
That bottom-to-top order is the *object axis* of a layout: ``Layout.objects`` holds every slot of
every image in it, ``Layout.kinds`` says which slots are evidence and which distractors, and a slot
an image does not use is marked not ``drawn`` (padding). Because the renderer paints each object
itself, against the background texture only (an object's colours never depend on what lies under it),
removing any set of objects and re-rendering gives the exact counterfactual scene, and any such scene
equals painting the kept objects' layers over the background in axis order.

The random choices that fill a layout are drawn in :mod:`reproduce.data.scenes`.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from reproduce.data.shapes import (
    NEUTRAL_GREY,
    PATTERN_NAMES,
    SHAPE_NAMES,
    pattern_images,
    shape_masks,
    textured_background,
)
from reproduce.errors import ConfigError

KIND_PADDING, KIND_EVIDENCE, KIND_DISTRACTOR = 0, 1, 2
GROUPS = {"evidence": True, "distractors": False}  # group name -> whether it names the evidence slots
# The ImageNet-9 test variants (the Backgrounds Challenge's names); see :func:`paint_variant`.
BACKGROUNDS = ("original", "mixed_next", "mixed_rand", "mixed_same", "only_fg", "only_bg_t")


@dataclass
class Objects:
    """Object slots of every image of a split: arrays ``[N, slots]`` of design indices
    ``shape``/``pattern``, centre ``cx, cy`` and radius ``r`` in units of the image side, ``opacity``
    (the contrast knob) and ``drawn`` (whether the slot holds an object)."""

    shape: np.ndarray
    pattern: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    drawn: np.ndarray
    opacity: np.ndarray

    @staticmethod
    def empty(n: int, slots: int) -> "Objects":
        z = np.zeros((n, slots))
        return Objects(np.zeros((n, slots), np.int64), np.zeros((n, slots), np.int64), z, z.copy(), z.copy(),
                       np.zeros((n, slots), dtype=bool), np.ones((n, slots)))

    @property
    def slots(self) -> int:
        return self.shape.shape[1]

    def footprints(self, images: np.ndarray, size: int) -> np.ndarray:
        """Bool ``[n, slots, size, size]``: the full (unoccluded) pixels of each drawn slot."""
        masks = np.zeros((len(images), self.slots, size, size), dtype=bool)
        for s in range(self.slots):
            on = self.drawn[images, s]
            if on.any():
                j = images[on]
                masks[on, s] = shape_masks(self.shape[j, s], self.cx[j, s] * size, self.cy[j, s] * size,
                                           self.r[j, s] * size, size)
        return masks

    def layer(self, images: np.ndarray, s: int, background: np.ndarray, size: int) -> np.ndarray:
        """Uint8 ``[n, 3, size, size]``: slot ``s`` painted everywhere (its pattern blended into the
        background texture by its opacity); only its footprint is ever shown."""
        colours = pattern_images(self.pattern[images, s], self.cx[images, s] * size, self.cy[images, s] * size, size)
        alpha = self.opacity[images, s]
        if np.all(alpha == 1.0):
            return colours
        a = alpha.astype(np.float32)[:, None, None, None]
        blended = background.astype(np.float32)
        blended += a * (colours.astype(np.float32) - blended)
        return np.rint(blended, out=blended).astype(np.uint8)

    def describe(self, i: int, s: int, size: int) -> dict[str, Any]:
        return {"shape": SHAPE_NAMES[self.shape[i, s]], "pattern": PATTERN_NAMES[self.pattern[i, s]],
                "cx": float(self.cx[i, s] * size), "cy": float(self.cy[i, s] * size),
                "r": float(self.r[i, s] * size), "opacity": float(self.opacity[i, s])}


def concat(parts: list[Objects]) -> Objects:
    fields = ("shape", "pattern", "cx", "cy", "r", "drawn", "opacity")
    return Objects(*(np.concatenate([getattr(p, f) for p in parts], axis=1) for f in fields))


@dataclass
class Layout:
    """Every random choice of a split: ``labels`` (training labels after label noise), ``clean_labels``,
    the ``objects`` on the object axis with their ``kinds`` ``[O]``, the background noise nodes
    ``coarse``/``fine`` ``[N, 3, g, g]`` and the background ``family`` ``[N]`` (-1 without families)."""

    labels: np.ndarray
    clean_labels: np.ndarray
    objects: Objects
    kinds: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray
    family: np.ndarray

    @property
    def evidence_slots(self) -> np.ndarray:
        return np.flatnonzero(self.kinds == KIND_EVIDENCE)

    def names(self) -> list[str]:
        """Names of the slots on the object axis: ``distractor<k>``, ``evidence`` (or ``evidence0/1``),
        ``occluder``."""
        evidence = self.evidence_slots
        names, d = [], 0
        for s, kind in enumerate(self.kinds):
            if kind == KIND_EVIDENCE:
                names.append("evidence" if len(evidence) == 1 else f"evidence{s - evidence[0]}")
            elif s > evidence[-1]:
                names.append("occluder")
            else:
                names.append(f"distractor{d}")
                d += 1
        return names

    def slots_named(self, i: int, remove: Iterable[int | str]) -> np.ndarray:
        """Bool ``[O]``: the drawn objects of image ``i`` that ``remove`` names, by name (see
        :meth:`names`), position on the object axis or group (``evidence``, ``distractors``)."""
        names, drawn = self.names(), self.objects.drawn[i]
        have = [names[o] for o in np.flatnonzero(drawn)]
        out = np.zeros(len(names), dtype=bool)
        for item in ([remove] if isinstance(remove, (str, int)) else remove):
            if isinstance(item, str) and item in GROUPS:
                out |= drawn & ((self.kinds == KIND_EVIDENCE) == GROUPS[item])
                continue
            o = names.index(item) if isinstance(item, str) and item in names else item
            if isinstance(o, bool) or not isinstance(o, numbers.Integral) or not 0 <= o < len(names) or not drawn[o]:
                raise ConfigError(f"Image {i} has no object {item!r} to remove; it has {have} (names or positions "
                                  f"on the object axis), or the groups {list(GROUPS)}.")
            out[o] = True
        return out


def background_texture(layout: Layout, idx: np.ndarray, size: int) -> np.ndarray:
    return textured_background(layout.coarse[idx], layout.fine[idx], size)


def render(layout: Layout, idx: np.ndarray, size: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint images ``idx`` with the objects ``keep`` (bool ``[n, O]``, default all) over their own
    background: uint8 ``[n, 3, size, size]`` and the full footprints bool ``[n, O, size, size]`` of
    every drawn slot (kept or not)."""
    texture = background_texture(layout, idx, size)
    canvas = texture.copy()
    objects = layout.objects
    footprints = objects.footprints(idx, size)
    painted = objects.drawn[idx] if keep is None else objects.drawn[idx] & keep
    for s in range(objects.slots):
        rows = np.flatnonzero(painted[:, s])
        if not len(rows):
            continue
        # Only the footprint pixels are blended and written (objects cover a few % of the image).
        j, y, x = np.nonzero(footprints[rows, s])
        colours = pattern_images(objects.pattern[idx[rows], s], objects.cx[idx[rows], s] * size,
                                 objects.cy[idx[rows], s] * size, size)[j, :, y, x]
        alpha = objects.opacity[idx[rows], s]
        if np.any(alpha != 1.0):
            under = texture[rows[j], :, y, x].astype(np.float32)
            colours = np.rint(under + alpha.astype(np.float32)[j, None] * (colours - under)).astype(np.uint8)
        canvas[rows[j], :, y, x] = colours
    return canvas, footprints


def visible(footprints: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """Bool ``[n, O, H, W]``: the pixels of each painted slot that no later (higher) painted slot covers."""
    out = footprints & painted[:, :, None, None]
    above = np.zeros(out.shape[:1] + out.shape[2:], dtype=bool)
    for s in range(out.shape[1] - 1, -1, -1):
        out[:, s] &= ~above
        above |= footprints[:, s] & painted[:, s, None, None]
    return out


def paint_variant(layout: Layout, idx: np.ndarray, size: int, background: str,
                  sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images ``idx`` in the ImageNet-9 test variant ``background`` (uint8) and their visible evidence
    parts bool ``[n, P, H, W]``. ``original``: the scene; ``mixed_*``: the evidence pixels of image
    ``i`` (its parts) pasted on the background of image ``sources[i]`` (a background is everything of
    a scene but its evidence); ``only_fg``: the evidence pixels on a flat neutral grey; ``only_bg_t``:
    the evidence removed (the exact background under it)."""
    canvas, footprints = render(layout, idx, size)
    parts = visible(footprints, layout.objects.drawn[idx])[:, layout.evidence_slots]
    union = parts.any(1)[:, None]
    if background == "only_fg":
        canvas = np.where(union, canvas, np.uint8(NEUTRAL_GREY))
    elif background != "original":
        source = idx if background == "only_bg_t" else sources[idx]
        keep = layout.kinds != KIND_EVIDENCE
        without_evidence, _ = render(layout, source, size, keep=np.broadcast_to(keep, (len(idx), len(keep))))
        canvas = without_evidence if background == "only_bg_t" else np.where(union, canvas, without_evidence)
    return canvas, parts


def object_arrays(layout: Layout, i: int, size: int) -> dict[str, np.ndarray]:
    """The interventional arrays of image ``i`` on the object axis (uint8 pixels, not yet scaled):
    ``object_masks`` (visible pixels), ``object_footprints`` (full pixels), ``object_kinds`` (0 for
    a slot the image does not use), ``object_layers`` (each object painted everywhere) and
    ``images_without_objects`` (the background texture)."""
    idx = np.array([i])
    drawn = layout.objects.drawn[idx]
    _, footprints = render(layout, idx, size)
    texture = background_texture(layout, idx, size)
    layers = np.stack([layout.objects.layer(idx, o, texture, size)[0] for o in range(layout.objects.slots)])
    return {
        "object_masks": visible(footprints, drawn)[0],
        "object_footprints": footprints[0] & drawn[0, :, None, None],
        "object_kinds": np.where(drawn[0], layout.kinds, 0),
        "object_layers": layers,
        "images_without_objects": texture[0],
    }


def tight_boxes(mask: np.ndarray) -> np.ndarray:
    """Float ``[n, 4]`` (x0, y0, x1, y1), exclusive max, of bool masks ``[n, H, W]`` (non-empty)."""
    rows, cols = mask.any(2), mask.any(1)
    h, w = mask.shape[1:]
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)
