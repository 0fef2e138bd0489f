"""The embedded synthetic ground-truth benchmark: procedurally drawn scenes whose label is explained by
exactly known pixels, so attribution methods can be scored on localisation without any download.

Scene (every image, every class, same distributions):

- a textured background (low-frequency colour noise plus a finer grain, muted colours);
- 1-3 distractor objects from a pool shared by all classes: a class shape wearing a colour pattern
  that no class wears, so a distractor is never a class's design and carries no label information;
- the discriminative evidence, drawn last with hard edges so its mask is exact per pixel:
  ``variant="single"``: one object whose shape AND colour pattern define the class (``red_disk``);
  ``variant="two_part"``: two separate parts, part types ``c`` and ``(c + 1) % K`` for class ``c``,
  so each part alone fits two classes and only the pair identifies the class (the COMET two-part
  feature-coverage test bed).

``background="shifted"`` (the ImageNet-9 ``mixed_next`` test): image ``i`` keeps its own evidence
(pixels, mask, box, label) pasted on the background (texture and distractors) of image
``(i + 1) % N`` of the same split.

Geometry is drawn in units of the image side, so a scene is the same layout at 64x64 and 224x224.
Generation is deterministic from ``(seed, split)``: each split and each kind of random draw (labels,
evidence, distractors, background) has its own stream, and draws are per image in index order, so the
first ``n`` images of a split do not depend on the split size. Splits are cached on disk, one file per
parameter set keyed by a hash of every generation parameter, written atomically and checked by a
SHA-256 digest on load (a damaged file is regenerated).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reproduce.atomic import atomic_write_bytes
from reproduce.checks import check_choice, check_int
from reproduce.data.base import ImageDataset
from reproduce.data.registry import register_dataset
from reproduce.data.shapes import (
    DISTRACTOR_PATTERNS,
    PATTERN_NAMES,
    PATTERNS,
    SHAPE_NAMES,
    pattern_images,
    shape_masks,
    textured_background,
)
from reproduce.errors import ConfigError
from reproduce.models.data_config import DataConfig

log = logging.getLogger(__name__)

# Bump when drawing changes: it is part of the cache key, so stale caches are never reused.
GENERATOR_VERSION = 2
_MAGIC = b"RPSYNTH1"
_DIGEST = 32

SPLITS = ("train", "val", "test")
VARIANTS = ("single", "two_part")
BACKGROUNDS = ("own", "shifted")
DEFAULT_SIZES = {"train": 6000, "val": 1000, "test": 1000}
MAX_CLASSES = min(len(SHAPE_NAMES), len(PATTERNS))
MIN_IMAGE_SIZE = 32

# Geometry in pixels of a 64x64 image (scaled with the image): a single object is 14-28 px across,
# each of the two parts 12-20 px, distractors 10-20 px; boxes of different objects stay GAP apart.
OBJECT_RADIUS = (7.0, 14.0)
PART_RADIUS = (6.0, 10.0)
DISTRACTOR_RADIUS = (5.0, 10.0)
GAP = 2.0
DISTRACTORS_PER_IMAGE = (1, 3)
# Placement is rejection sampling over this many candidates per object, first valid one wins.
CANDIDATES = 48

_STREAM_LABELS, _STREAM_EVIDENCE, _STREAM_DISTRACTORS, _STREAM_BACKGROUND = range(4)
_COARSE_NODES, _FINE_NODES = 5, 13
_COARSE_RANGE, _FINE_RANGE = (80.0, 176.0), (-14.0, 14.0)


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), stream]))


def _apart(cx1, cy1, r1, cx2, cy2, r2) -> np.ndarray:
    """Whether two objects' boxes are at least GAP apart (all in units of the image side)."""
    gap = r1 + r2 + GAP / 64.0
    return (np.abs(cx1 - cx2) >= gap) | (np.abs(cy1 - cy2) >= gap)


def _place(u: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and radius from uniforms ``u[..., 0:3]``; the centre keeps the object inside the image."""
    r = (bounds[0] + u[..., 0] * (bounds[1] - bounds[0])) / 64.0
    cx = r + u[..., 1] * (1 - 2 * r)
    cy = r + u[..., 2] * (1 - 2 * r)
    return cx, cy, r


def _first_true(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first True along the last axis, and whether there is one."""
    return valid.argmax(-1), valid.any(-1)


@dataclass
class Objects:
    """One kind of object (evidence or distractors) of every image of a split.

    Arrays are ``[N, slots]``: design indices ``shape``/``pattern``, centre ``cx, cy`` and radius
    ``r`` in units of the image side, and ``drawn`` (whether the slot holds an object).
    """

    shape: np.ndarray
    pattern: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    drawn: np.ndarray

    def apart_from(self, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Which candidates ``[N, C]`` keep their boxes GAP away from every drawn object."""
        ok = np.ones(cx.shape, dtype=bool)
        for s in range(self.shape.shape[1]):
            col = (slice(None), s, None)
            ok &= _apart(cx, cy, r, self.cx[col], self.cy[col], self.r[col]) | ~self.drawn[col]
        return ok

    def draw(self, canvas: np.ndarray, images: np.ndarray, size: int, paint: bool = True) -> np.ndarray:
        """Paint the objects of ``images`` on ``canvas`` ``[n, 3, size, size]`` in slot order (or only
        compute where they lie, ``paint=False``); returns their masks ``[n, slots, size, size]``."""
        masks = np.zeros((len(images), self.shape.shape[1], size, size), dtype=bool)
        for s in range(self.shape.shape[1]):
            on = self.drawn[images, s]
            if not on.any():
                continue
            j = images[on]
            cx, cy = self.cx[j, s] * size, self.cy[j, s] * size
            mask = shape_masks(self.shape[j, s], cx, cy, self.r[j, s] * size, size)
            masks[on, s] = mask
            if paint:
                colours = pattern_images(self.pattern[j, s], cx, cy, size)
                if on.all():
                    np.copyto(canvas, colours, where=mask[:, None])
                else:
                    canvas[on] = np.where(mask[:, None], colours, canvas[on])
        return masks

    def describe(self, i: int, size: int) -> list[dict[str, Any]]:
        """Drawn objects of image ``i`` by design name, centre and radius in pixels."""
        return [
            {
                "shape": SHAPE_NAMES[self.shape[i, s]],
                "pattern": PATTERN_NAMES[self.pattern[i, s]],
                "cx": float(self.cx[i, s] * size),
                "cy": float(self.cy[i, s] * size),
                "r": float(self.r[i, s] * size),
            }
            for s in range(self.shape.shape[1])
            if self.drawn[i, s]
        ]


@dataclass
class Layout:
    """Every random choice of a split: labels ``[N]``, the evidence (1 object, or 2 parts in
    part-type order), the distractors and the background noise nodes ``coarse``/``fine``
    ``[N, 3, g, g]``."""

    labels: np.ndarray
    evidence: Objects
    distractors: Objects
    coarse: np.ndarray
    fine: np.ndarray


def distractor_pool(num_classes: int) -> list[tuple[int, int]]:
    """(shape, pattern) designs a distractor may take: any class shape with a distractor-only
    pattern (indices into ``ALL_PATTERNS``)."""
    first = len(PATTERNS)
    return [(s, first + p) for s in range(num_classes) for p in range(len(DISTRACTOR_PATTERNS))]


def _draw_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    # Balanced in blocks of K: every K consecutive images hold each class once.
    keys = rng.random((-(-n // k), k))
    return np.argsort(keys, axis=1).reshape(-1)[:n].astype(np.int64)


def _draw_evidence(rng: np.random.Generator, labels: np.ndarray, variant: str, k: int) -> Objects:
    n = len(labels)
    if variant == "single":
        cx, cy, r = _place(rng.random((n, 1, 3)), OBJECT_RADIUS)
        design = labels[:, None]
    else:
        # Both parts jointly from candidate pairs; the first pair whose boxes are apart wins.
        cx, cy, r = _place(rng.random((n, CANDIDATES, 2, 3)), PART_RADIUS)
        a, b = (..., 0), (..., 1)
        first, found = _first_true(_apart(cx[a], cy[a], r[a], cx[b], cy[b], r[b]))
        rows = np.arange(n)
        cx, cy, r = cx[rows, first], cy[rows, first], r[rows, first]
        # Opposite corners are always apart: the fallback when no candidate pair is (63% of random
        # pairs are apart, so it never happened in 10^5 images).
        cx[~found] = np.stack([r[~found, 0], 1 - r[~found, 1]], axis=1)
        cy[~found] = cx[~found]
        design = np.stack([labels, (labels + 1) % k], axis=1)
    return Objects(design, design.copy(), cx, cy, r, np.ones(design.shape, dtype=bool))


def _draw_distractors(rng: np.random.Generator, evidence: Objects, k: int) -> Objects:
    n = len(evidence.shape)
    lo, hi = DISTRACTORS_PER_IMAGE
    u = rng.random((n, 1 + hi + hi * CANDIDATES * 3))
    count = lo + np.minimum((u[:, 0] * (hi - lo + 1)).astype(np.int64), hi - lo)
    pool = np.array(distractor_pool(k), dtype=np.int64)
    design = pool[np.minimum((u[:, 1:1 + hi] * len(pool)).astype(np.int64), len(pool) - 1)]
    cand_cx, cand_cy, cand_r = _place(u[:, 1 + hi:].reshape(n, hi, CANDIDATES, 3), DISTRACTOR_RADIUS)
    placed = Objects(design[..., 0], design[..., 1], *(np.zeros((n, hi)) for _ in range(3)),
                     np.zeros((n, hi), dtype=bool))
    rows = np.arange(n)
    for s in range(hi):
        cand = cand_cx[:, s], cand_cy[:, s], cand_r[:, s]
        first, found = _first_true(evidence.apart_from(*cand) & placed.apart_from(*cand))
        placed.cx[:, s], placed.cy[:, s], placed.r[:, s] = (a[rows, first] for a in cand)
        # A slot with no free spot among the candidates stays empty: 1 in ~1900 slots with one
        # object, 1 in ~140 with two parts; no image was left without a distractor in 10^5.
        placed.drawn[:, s] = found & (s < count)
    return placed


def _draw_background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    g1, g2 = 3 * _COARSE_NODES**2, 3 * _FINE_NODES**2
    u = rng.random((n, g1 + g2))
    (c_lo, c_hi), (f_lo, f_hi) = _COARSE_RANGE, _FINE_RANGE
    coarse = (c_lo + u[:, :g1] * (c_hi - c_lo)).astype(np.float32)
    fine = (f_lo + u[:, g1:] * (f_hi - f_lo)).astype(np.float32)
    return coarse.reshape(n, 3, _COARSE_NODES, -1), fine.reshape(n, 3, _FINE_NODES, -1)


def draw_layout(seed: int, split: str, variant: str, num_classes: int, n: int) -> Layout:
    """Draw every random choice of a split. Each stream draws one row of uniforms per image in a
    single call, so image ``i`` depends only on ``(seed, split, i)``, not on the split size."""
    labels = _draw_labels(_rng(seed, split, _STREAM_LABELS), n, num_classes)
    evidence = _draw_evidence(_rng(seed, split, _STREAM_EVIDENCE), labels, variant, num_classes)
    distractors = _draw_distractors(_rng(seed, split, _STREAM_DISTRACTORS), evidence, num_classes)
    coarse, fine = _draw_background(_rng(seed, split, _STREAM_BACKGROUND), n)
    return Layout(labels, evidence, distractors, coarse, fine)


def background_source(i: np.ndarray | int, n: int, shifted: bool):
    """Index of the image whose background (texture and distractors) image ``i`` shows."""
    return (i + 1) % n if shifted else i


def render(
    layout: Layout, idx: np.ndarray, size: int, shifted: bool, include_object: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Draw images ``idx``: uint8 ``[n, 3, size, size]`` and evidence masks bool ``[n, P, size, size]``
    (the masks are returned whether or not the evidence is painted)."""
    bg = background_source(idx, len(layout.labels), shifted)
    canvas = textured_background(layout.coarse[bg], layout.fine[bg], size)
    layout.distractors.draw(canvas, bg, size)
    return canvas, layout.evidence.draw(canvas, idx, size, paint=include_object)


def tight_boxes(mask: np.ndarray) -> np.ndarray:
    """Float ``[n, 4]`` (x0, y0, x1, y1), exclusive max, of bool masks ``[n, H, W]`` (non-empty)."""
    rows, cols = mask.any(2), mask.any(1)
    h, w = mask.shape[1:]
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.float32)


def _class_name(variant: str, c: int, k: int) -> str:
    design = lambda t: f"{PATTERN_NAMES[t]}_{SHAPE_NAMES[t]}"  # noqa: E731
    return design(c) if variant == "single" else f"{design(c)}+{design((c + 1) % k)}"


def _check_int(name: str, value: Any, low: int, fix: str) -> int:
    try:
        return check_int(name, value, minimum=low)
    except ConfigError as err:
        raise ConfigError(f"{str(err)[:-1]}; {fix}.") from None


def _check_sizes(sizes: Any) -> dict[str, int]:
    if sizes is None:
        return dict(DEFAULT_SIZES)
    if not isinstance(sizes, Mapping):  # a dict, or an OmegaConf DictConfig from a Hydra config
        raise ConfigError(f"sizes must be a dict like {{'train': 6000, 'test': 1000}}, got {sizes!r}.")
    for key, value in sizes.items():
        check_choice("split in sizes", key, SPLITS)
        _check_int(f"sizes[{key!r}]", value, 1, "every split needs at least one image")
    return {**DEFAULT_SIZES, **{k: int(v) for k, v in sizes.items()}}


@register_dataset("synthetic")
class SyntheticShapes(ImageDataset):
    """Synthetic scenes with exact localisation ground truth (see the module docstring).

    Args:
        root: cache directory; default ``$REPRODUCE_CACHE/synthetic`` (``~/.cache/reproduce``).
        split: ``train``, ``val`` or ``test``.
        variant: ``single`` (one discriminative object) or ``two_part`` (two parts define the class).
        background: ``own`` or ``shifted`` (evidence of image i on the background of image i+1).
        num_classes: number of classes (2-8; 3-8 for ``two_part``); class c uses design c.
        image_size: square image side in pixels (>= 32; 64 for the small models, 224 works).
        sizes: split sizes, merged over the default train 6000 / val 1000 / test 1000.
        seed: generation seed (non-negative integer).
        normalize: the model's data config; images come back normalised when given.

    Items: ``image`` float [3,H,W], ``label``, ``index``, ``mask`` bool [H,W] (exactly the evidence
    pixels), ``box`` float [4] (tight box of the mask, exclusive max) and, for ``two_part``,
    ``parts`` bool [2,H,W] (part types c and (c+1) % K, in that order; their union is ``mask``).
    """

    has_masks = True
    has_boxes = True
    has_parts = False

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        variant: str = "single",
        background: str = "own",
        num_classes: int = 6,
        image_size: int = 64,
        sizes: dict[str, int] | None = None,
        seed: int = 0,
        normalize: DataConfig | None = None,
    ):
        self.split = check_choice("split", split, SPLITS)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.background = check_choice("background", background, BACKGROUNDS)
        if variant == "single":
            self.num_classes = _check_int("num_classes", num_classes, 2, "a classifier needs two classes")
        else:
            self.num_classes = _check_int("num_classes", num_classes, 3, "the two_part variant needs at "
                                          "least 3 part types so that no single part identifies a class")
        if self.num_classes > MAX_CLASSES:
            raise ConfigError(
                f"num_classes={num_classes} exceeds the {MAX_CLASSES} class designs of the synthetic "
                f"benchmark; use num_classes <= {MAX_CLASSES}."
            )
        self.image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE, "smaller images cannot show "
                                     f"the objects; use at least {MIN_IMAGE_SIZE} (default 64)")
        self.seed = _check_int("seed", seed, 0, "pass a non-negative integer such as 0")
        self.sizes = _check_sizes(sizes)
        if normalize is not None and not isinstance(normalize, DataConfig):
            raise ConfigError(
                "normalize must be a DataConfig (e.g. ModelAdapter(model).data_config), got "
                f"{type(normalize).__name__}."
            )
        if root is None:
            root = os.path.join(os.environ.get("REPRODUCE_CACHE", "~/.cache/reproduce"), "synthetic")
        elif not isinstance(root, (str, os.PathLike)):
            raise ConfigError(f"root must be a directory path, got {root!r}.")
        self.root = os.path.expanduser(os.fspath(root))
        super().__init__(normalize=normalize)

        self.has_parts = self.variant == "two_part"
        self.class_names = [_class_name(self.variant, c, self.num_classes) for c in range(self.num_classes)]
        self._layout: Layout | None = None
        arrays = self._load_or_generate()
        self._images = arrays["images"]
        self._labels = arrays["labels"]
        self._masks = arrays["masks"]
        self._boxes = arrays["boxes"]
        self._parts = arrays.get("parts")

    # ---- generation parameters and cache -------------------------------------------------------
    def generation_params(self) -> dict[str, Any]:
        """Everything the pixels depend on; hashed into the cache key."""
        return {
            "generator_version": GENERATOR_VERSION,
            "split": self.split,
            "size": self.sizes[self.split],
            "variant": self.variant,
            "background": self.background,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "seed": self.seed,
        }

    @property
    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.generation_params(), sort_keys=True).encode()).hexdigest()

    @property
    def cache_path(self) -> str:
        p = self.generation_params()
        readable = f"{p['variant']}-{p['background']}-{p['split']}-n{p['size']}-px{p['image_size']}"
        name = f"{readable}-{self.cache_key[:16]}.synth"
        return os.path.join(self.root, name)

    def _load_or_generate(self) -> dict[str, np.ndarray]:
        """Read the cached split or draw and cache it. File layout: magic, SHA-256 of the payload,
        payload (an ``.npz`` holding the cache key and the arrays)."""
        path = self.cache_path
        if os.path.exists(path):
            try:
                return self._read_cache(path)
            except (ValueError, OSError, KeyError) as err:
                log.warning("Synthetic cache %s is unreadable (%s); regenerating it.", path, err)
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"Cannot create the synthetic cache directory {self.root!r} ({err}); pass "
                              "root= or set REPRODUCE_CACHE to a writable directory.") from err
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"The synthetic cache directory {self.root!r} is not writable; pass root= or "
                              "set REPRODUCE_CACHE to a writable directory.")
        arrays = self._generate()
        buffer = io.BytesIO()
        np.savez(buffer, key=np.array(self.cache_key), **arrays)
        payload = buffer.getvalue()
        atomic_write_bytes(path, _MAGIC + hashlib.sha256(payload).digest() + payload)
        return arrays

    def _read_cache(self, path: str) -> dict[str, np.ndarray]:
        with open(path, "rb") as f:
            blob = f.read()
        head = len(_MAGIC) + _DIGEST
        if len(blob) < head or blob[: len(_MAGIC)] != _MAGIC:
            raise ValueError("not a synthetic-benchmark cache file")
        payload = blob[head:]
        if hashlib.sha256(payload).digest() != blob[len(_MAGIC):head]:
            raise ValueError("checksum mismatch (truncated or damaged)")
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if str(arrays.pop("key")) != self.cache_key:
            raise ValueError("written for other generation parameters")
        n, s = self.sizes[self.split], self.image_size
        if arrays["images"].shape != (n, 3, s, s) or arrays["labels"].shape != (n,):
            raise ValueError("unexpected array shapes")
        return arrays

    @property
    def layout(self) -> Layout:
        """Every random choice of this split (drawn on first use; the cache holds only pixels)."""
        if self._layout is None:
            self._layout = draw_layout(
                self.seed, self.split, self.variant, self.num_classes, self.sizes[self.split]
            )
        return self._layout

    def _generate(self) -> dict[str, np.ndarray]:
        n, s = self.sizes[self.split], self.image_size
        layout = self.layout
        parts = layout.evidence.shape.shape[1]
        packed = (s * s + 7) // 8
        images = np.empty((n, 3, s, s), dtype=np.uint8)
        masks = np.empty((n, packed), dtype=np.uint8)
        part_masks = np.empty((n, parts, packed), dtype=np.uint8)
        boxes = np.empty((n, 4), dtype=np.float32)
        chunk = max(1, (1 << 22) // (s * s))  # bounds the working memory; the pixels do not depend on it
        for start in range(0, n, chunk):
            idx = np.arange(start, min(n, start + chunk))
            images[idx], evidence = render(layout, idx, s, shifted=self.background == "shifted")
            union = evidence.any(1)
            masks[idx] = np.packbits(union.reshape(len(idx), -1), axis=1)
            part_masks[idx] = np.packbits(evidence.reshape(len(idx), parts, -1), axis=2)
            boxes[idx] = tight_boxes(union)
        arrays = {"images": images, "labels": layout.labels, "masks": masks, "boxes": boxes}
        if self.has_parts:
            arrays["parts"] = part_masks
        return arrays

    # ---- dataset protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def _unpack(self, bits: np.ndarray) -> torch.Tensor:
        s = self.image_size
        flat = np.unpackbits(bits, axis=-1, count=s * s).astype(bool)
        return torch.from_numpy(flat.reshape(*bits.shape[:-1], s, s))

    def _check_index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not -n <= index < n:
            raise IndexError(f"index {index!r} out of range for a split of {n} images")
        return int(index) % n

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        item = {
            "image": torch.from_numpy(self._images[i]).float().div_(255.0),
            "label": int(self._labels[i]),
            "index": i,
            "mask": self._unpack(self._masks[i]),
            "box": torch.from_numpy(self._boxes[i].copy()),
        }
        if self.has_parts:
            item["parts"] = self._unpack(self._parts[i])
        return self._finish(item)

    @property
    def labels(self) -> np.ndarray:
        """Int64 ``[N]`` labels of the split (read-only view)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def images_uint8(self) -> np.ndarray:
        """Uint8 ``[N, 3, H, W]`` images in [0, 255], never normalised (read-only view), for fast
        in-memory training loops."""
        view = self._images.view()
        view.flags.writeable = False
        return view

    def render(self, index: int, include_object: bool = True) -> torch.Tensor:
        """Redraw image ``index`` from its layout as float ``[3, H, W]`` in [0, 1] (never normalised);
        ``include_object=False`` leaves out the discriminative evidence, showing what lies under it."""
        i = self._check_index(index)
        shifted = self.background == "shifted"
        canvas, _ = render(self.layout, np.array([i]), self.image_size, shifted, include_object)
        return torch.from_numpy(canvas[0]).float().div_(255.0)

    def scene(self, index: int) -> dict[str, Any]:
        """Layout of image ``index``: label, evidence and drawn distractors (designs by name, centre
        and radius in pixels) and the image whose background (texture and distractors) it shows."""
        i = self._check_index(index)
        bg = int(background_source(i, len(self), self.background == "shifted"))
        return {
            "label": int(self.layout.labels[i]),
            "evidence": self.layout.evidence.describe(i, self.image_size),
            "distractors": self.layout.distractors.describe(bg, self.image_size),
            "background_of": bg,
        }

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            **self.generation_params(),
            "cache_key": self.cache_key,
            "class_names": list(self.class_names),
        }


@register_dataset("synthetic_two_part")
class SyntheticTwoPartShapes(SyntheticShapes):
    """:class:`SyntheticShapes` with ``variant="two_part"`` by default (the other options are
    :class:`SyntheticShapes`'s; the registry follows ``**kwargs`` to them)."""

    def __init__(self, variant: str = "two_part", **kwargs: Any):
        super().__init__(variant=variant, **kwargs)
