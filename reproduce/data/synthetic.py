"""The embedded synthetic ground-truth benchmark: procedurally drawn scenes whose label is explained by
exactly known pixels, so attribution methods can be scored without any download.

Scene (random choices in :mod:`reproduce.data.scenes`, painting in :mod:`reproduce.data.scene_render`,
knobs and presets in :mod:`reproduce.data.scene_knobs`):

- a textured background (low-frequency colour noise plus a finer grain, muted colours);
- distractor objects from a pool shared by all classes: a class shape wearing a colour pattern no
  class wears, so a distractor never carries label information; optionally an occluder, a
  distractor drawn over part of the evidence;
- the discriminative evidence with hard edges, so its mask is exact per pixel:
  ``variant="single"``: one object whose shape AND colour pattern define the class (``red_disk``);
  ``variant="two_part"``: two separate parts, part types ``c`` and ``(c + 1) % K`` for class ``c``,
  so each part alone fits two classes and only the pair identifies the class.

Shortcut (``rho``, the ``synthetic_spurious`` dataset): the background is drawn from one of K tinted
*families*; in every split the family is the class's own with probability ``rho`` (else uniform), so
the background predicts the label without being its cause (the ImageNet-9 Backgrounds Challenge
analogue).

``background`` selects the ImageNet-9 test variant, with the Backgrounds Challenge's names (the same
names as ``imagenet9``'s ``variant``): ``original``; ``mixed_next`` / ``mixed_rand`` /
``mixed_same``: the evidence pixels of image ``i`` (its mask) pasted on the background of image
``i + 1`` / of a random other image / of a random other image of the same class (a background is
everything of a scene but its evidence: texture, distractors, occluder); ``only_fg``: the evidence
pixels on a flat neutral grey; ``only_bg_t``: the evidence removed (the exact background under it).
Label, ``mask`` and ``box`` are image ``i``'s in every variant (``only_bg_t``: where the evidence was).

Interventions (``background="original"``): ``render(i, remove=[...])`` redraws image ``i`` without
any set of its objects on the same background (an exact counterfactual), ``objects(i)`` lists them,
and with ``interventions=True`` every item carries what the interventional metrics need (listed in
``extras``; see :meth:`SyntheticShapes.__getitem__`).

Splits are cached on disk (:mod:`reproduce.data.synthetic_cache`), keyed by a hash of every
generation parameter.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from reproduce.checks import check_bool, check_choice, check_fraction, check_int
from reproduce.data.base import ImageDataset
from reproduce.data.registry import register_dataset
from reproduce.data.scene_knobs import PRESETS, resolve_difficulty
from reproduce.data.scene_render import (
    BACKGROUNDS,
    KIND_EVIDENCE,
    Layout,
    object_arrays,
    paint_variant,
    render,
    tight_boxes,
)
from reproduce.data.scenes import SPLITS, VARIANTS, draw_layout, pairing
from reproduce.data.shapes import PATTERN_NAMES, PATTERNS, SHAPE_NAMES
from reproduce.data.synthetic_cache import load_or_generate
from reproduce.errors import ConfigError
from reproduce.models.data_config import DataConfig

# Bump when drawing changes: it is part of the cache key, so stale caches are never reused.
GENERATOR_VERSION = 3
DEFAULT_SIZES = {"train": 6000, "val": 1000, "test": 1000}
MAX_CLASSES = min(len(SHAPE_NAMES), len(PATTERNS))
MIN_IMAGE_SIZE = 32
INTERVENTION_EXTRAS = ("object_masks", "object_footprints", "object_kinds", "object_layers", "images_without_objects")


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


def _check_root(root: Any) -> str:
    if root is None:
        root = os.path.join(os.environ.get("REPRODUCE_CACHE", "~/.cache/reproduce"), "synthetic")
    elif not isinstance(root, (str, os.PathLike)):
        raise ConfigError(f"root must be a directory path, got {root!r}.")
    return os.path.expanduser(os.fspath(root))


@register_dataset("synthetic")
class SyntheticShapes(ImageDataset):
    """Synthetic scenes with exact ground truth (see the module docstring).

    Args:
        root: cache directory; default ``$REPRODUCE_CACHE/synthetic`` (``~/.cache/reproduce``).
        split: ``train``, ``val`` or ``test``.
        variant: ``single`` (one discriminative object) or ``two_part`` (two parts define the class).
        background: the ImageNet-9 test variant (``original``, ``mixed_next``, ``mixed_rand``,
            ``mixed_same``, ``only_fg``, ``only_bg_t``).
        num_classes: number of classes (2-8; 3-8 for ``two_part``); class c uses design c.
        image_size: square image side in pixels (>= 32; 64 for the small models, 224 works).
        sizes: split sizes, merged over the default train 6000 / val 1000 / test 1000.
        seed: generation seed (non-negative integer).
        preset: ``hard`` (default) or ``easy``: the difficulty knobs below default to the preset's.
        evidence_scale, contrast, occlusion, occlusion_rate, distractors, confusers, label_noise: difficulty
            knobs (:mod:`reproduce.data.scene_knobs`); ``None`` takes the preset's value.
        rho: background-class correlation in [0, 1] of the background families; ``None`` (default)
            draws untinted backgrounds with no family.
        interventions: items carry the interventional extras (``background="original"`` only).
        normalize: the model's data config; images (and extras) come back normalised when given.

    Items: ``image`` float [3,H,W], ``label``, ``index``, ``mask`` bool [H,W] (exactly the visible
    evidence pixels), ``box`` float [4] (tight box of the mask, exclusive max), for ``two_part``
    ``parts`` bool [2,H,W] (part types c and (c+1) % K, in that order), and the ``extras``.
    """

    has_masks = True
    has_boxes = True
    has_parts = False
    # Batch extras a boolean option turns on (the data module switches it on when a metric needs them).
    optional_extras = {"interventions": INTERVENTION_EXTRAS}

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        variant: str = "single",
        background: str = "original",
        num_classes: int = 6,
        image_size: int = 64,
        sizes: dict[str, int] | None = None,
        seed: int = 0,
        preset: str = "hard",
        evidence_scale: list[float] | None = None,
        contrast: list[float] | None = None,
        occlusion: float | None = None,
        occlusion_rate: float | None = None,
        distractors: list[int] | None = None,
        confusers: float | None = None,
        label_noise: float | None = None,
        rho: float | None = None,
        interventions: bool = False,
        normalize: DataConfig | None = None,
    ):
        self.split = check_choice("split", split, SPLITS)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.background = check_choice("background", background, BACKGROUNDS)
        low, fix = (2, "a classifier needs two classes") if variant == "single" else \
            (3, "the two_part variant needs at least 3 part types so that no single part identifies a class")
        self.num_classes = _check_int("num_classes", num_classes, low, fix)
        if self.num_classes > MAX_CLASSES:
            raise ConfigError(f"num_classes={num_classes} exceeds the {MAX_CLASSES} class designs of the synthetic "
                              f"benchmark; use num_classes <= {MAX_CLASSES}.")
        self.image_size = _check_int("image_size", image_size, MIN_IMAGE_SIZE, "smaller images cannot show "
                                     f"the objects; use at least {MIN_IMAGE_SIZE} (default 64)")
        self.seed = _check_int("seed", seed, 0, "pass a non-negative integer such as 0")
        self.sizes = _check_sizes(sizes)
        self.preset = check_choice("preset", preset, PRESETS)
        self.difficulty = resolve_difficulty(preset, dict(
            evidence_scale=evidence_scale, contrast=contrast, occlusion=occlusion, occlusion_rate=occlusion_rate,
            distractors=distractors, confusers=confusers, label_noise=label_noise))
        self.rho = None if rho is None else check_fraction("rho", rho, open_low=False)
        self.interventions = check_bool("interventions", interventions)
        if interventions and background != "original":
            raise ConfigError(f"interventions=True needs background='original' (got {background!r}): a mixed or "
                              "removed background has no scene to intervene on.")
        if normalize is not None and not isinstance(normalize, DataConfig):
            raise ConfigError("normalize must be a DataConfig (e.g. ModelAdapter(model).data_config), got "
                              f"{type(normalize).__name__}.")
        self.root = _check_root(root)
        super().__init__(normalize=normalize)

        self.has_parts = self.variant == "two_part"
        self.extras = INTERVENTION_EXTRAS if self.interventions else ()
        self.class_names = [_class_name(self.variant, c, self.num_classes) for c in range(self.num_classes)]
        self._layout: Layout | None = None
        arrays = load_or_generate(self.cache_path, self.cache_key, self._generate, self._check_arrays)
        self._images, self._labels, self._clean = arrays["images"], arrays["labels"], arrays["clean_labels"]
        self._masks, self._boxes, self._parts = arrays["masks"], arrays["boxes"], arrays.get("parts")

    # ---- generation parameters and cache -------------------------------------------------------
    def generation_params(self) -> dict[str, Any]:
        """Everything the pixels and labels depend on; hashed into the cache key."""
        return {
            "generator_version": GENERATOR_VERSION,
            "split": self.split,
            "size": self.sizes[self.split],
            "variant": self.variant,
            "background": self.background,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "seed": self.seed,
            "difficulty": self.difficulty.as_dict(),
            "rho": self.rho,
        }

    @property
    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.generation_params(), sort_keys=True).encode()).hexdigest()

    @property
    def cache_path(self) -> str:
        p = self.generation_params()
        readable = f"{p['variant']}-{p['background']}-{p['split']}-n{p['size']}-px{p['image_size']}"
        return os.path.join(self.root, f"{readable}-{self.cache_key[:16]}.synth")

    def _check_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n, s = self.sizes[self.split], self.image_size
        if arrays["images"].shape != (n, 3, s, s) or arrays["labels"].shape != (n,):
            raise ValueError("unexpected array shapes")

    @property
    def layout(self) -> Layout:
        """Every random choice of this split (drawn on first use; the cache holds only pixels)."""
        if self._layout is None:
            self._layout = draw_layout(self.seed, self.split, self.variant, self.num_classes,
                                       self.sizes[self.split], self.difficulty, self.rho)
        return self._layout

    def background_of(self) -> np.ndarray:
        """Int ``[N]``: the image whose background each image shows (itself unless mixed)."""
        how = self.background[len("mixed_"):] if self.background.startswith("mixed_") else None
        if how is None:
            return np.arange(self.sizes[self.split])
        return pairing(self.seed, self.split, self.layout.clean_labels, how)

    def _draw(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images ``idx`` of this variant (uint8) and their visible evidence parts bool ``[n, P, H, W]``."""
        return paint_variant(self.layout, idx, self.image_size, self.background, self.background_of())

    def _generate(self) -> dict[str, np.ndarray]:
        n, s = self.sizes[self.split], self.image_size
        parts = int((self.layout.kinds == KIND_EVIDENCE).sum())
        packed = (s * s + 7) // 8
        images = np.empty((n, 3, s, s), dtype=np.uint8)
        masks = np.empty((n, packed), dtype=np.uint8)
        part_masks = np.empty((n, parts, packed), dtype=np.uint8)
        boxes = np.empty((n, 4), dtype=np.float32)
        chunk = max(1, (1 << 22) // (s * s))  # bounds the working memory; the pixels do not depend on it
        for start in range(0, n, chunk):
            idx = np.arange(start, min(n, start + chunk))
            images[idx], evidence = self._draw(idx)
            union = evidence.any(1)
            masks[idx] = np.packbits(union.reshape(len(idx), -1), axis=1)
            part_masks[idx] = np.packbits(evidence.reshape(len(idx), parts, -1), axis=2)
            boxes[idx] = tight_boxes(union)
        arrays = {"images": images, "labels": self.layout.labels, "clean_labels": self.layout.clean_labels,
                  "masks": masks, "boxes": boxes}
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
        """The item of image ``index``; with ``interventions=True`` also, on the object axis ``O``
        (bottom-to-top paint order, the same for every image of the split; ``object_kinds`` 1 =
        evidence (in part order), 2 = distractor, 0 = a slot this image does not use):
        ``object_masks`` bool [O,H,W] (visible pixels), ``object_footprints`` bool [O,H,W] (full
        pixels), ``object_layers`` float [O,3,H,W] (each object painted everywhere, in the image's
        space; only its footprint is shown) and ``images_without_objects`` float [3,H,W] (the scene
        with every object removed). Painting the kept objects' layers over ``images_without_objects``
        in axis order gives exactly ``render(index, remove=<the others>)``."""
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
        if self.interventions:
            item.update(self._intervention_extras(i))
        return self._finish(item)

    def _intervention_extras(self, i: int) -> dict[str, torch.Tensor]:
        out = {k: torch.from_numpy(a) for k, a in object_arrays(self.layout, i, self.image_size).items()}
        for pixels in ("object_layers", "images_without_objects"):
            out[pixels] = out[pixels].float().div_(255.0)
            if self.normalize is not None:
                out[pixels] = self.normalize.normalize(out[pixels])
        return out

    @property
    def labels(self) -> np.ndarray:
        """Int64 ``[N]`` labels of the split (training labels after label noise; read-only view)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def clean_labels(self) -> np.ndarray:
        """Int64 ``[N]`` true classes (differ from ``labels`` only on a noisy training split)."""
        view = self._clean.view()
        view.flags.writeable = False
        return view

    @property
    def images_uint8(self) -> np.ndarray:
        """Uint8 ``[N, 3, H, W]`` images in [0, 255], never normalised (read-only view), for fast
        in-memory training loops."""
        view = self._images.view()
        view.flags.writeable = False
        return view

    # ---- scenes and interventions ------------------------------------------------------------
    def objects(self, index: int) -> list[dict[str, Any]]:
        """The objects of image ``index`` (``background="original"``) bottom to top: position on the
        object axis, name, kind (``evidence``/``distractor``), design, centre and radius in pixels."""
        i = self._check_index(index)
        layout = self.layout
        return [{"index": o, "name": name, "kind": "evidence" if layout.kinds[o] == KIND_EVIDENCE else "distractor",
                 **layout.objects.describe(i, o, self.image_size)}
                for o, name in enumerate(layout.names()) if layout.objects.drawn[i, o]]

    def render(self, index: int, remove: Iterable[int | str] = ()) -> torch.Tensor:
        """Redraw image ``index`` as float ``[3, H, W]`` in [0, 1] (never normalised). ``remove``
        (``background="original"`` only): objects to leave out, by name (``evidence``/``evidence0``,
        ``distractor2``, ``occluder``, the groups ``evidence`` and ``distractors``) or position on the
        object axis; the rest is drawn exactly as before on the same background."""
        i = self._check_index(index)
        idx = np.array([i])
        removed = self.layout.slots_named(i, remove)
        if removed.any() and self.background != "original":
            raise ConfigError(f"render(remove=...) needs background='original', not {self.background!r}.")
        canvas = render(self.layout, idx, self.image_size, keep=~removed[None])[0] if removed.any() else self._draw(idx)[0]
        return torch.from_numpy(canvas[0]).float().div_(255.0)

    def scene(self, index: int) -> dict[str, Any]:
        """Layout of image ``index``: label, evidence and background objects (designs by name, centre
        and radius in pixels), the background family (-1 without) and the image whose background it
        shows."""
        i = self._check_index(index)
        bg = int(self.background_of()[i])
        layout = self.layout
        describe = lambda j, kind: [layout.objects.describe(j, o, self.image_size)  # noqa: E731
                                    for o in range(layout.objects.slots)
                                    if layout.objects.drawn[j, o] and (layout.kinds[o] == KIND_EVIDENCE) == kind]
        return {"label": int(self._labels[i]), "evidence": describe(i, True),
                "distractors": describe(bg, False) if self.background not in ("only_fg",) else [],
                "family": int(layout.family[bg]), "background_of": bg}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.generation_params(), "preset": self.preset,
                "cache_key": self.cache_key, "class_names": list(self.class_names)}


@register_dataset("synthetic_two_part")
class SyntheticTwoPartShapes(SyntheticShapes):
    """:class:`SyntheticShapes` with ``variant="two_part"`` by default (the other options are
    :class:`SyntheticShapes`'s; the registry follows ``**kwargs`` to them)."""

    def __init__(self, variant: str = "two_part", **kwargs: Any):
        super().__init__(variant=variant, **kwargs)


@register_dataset("synthetic_spurious")
class SyntheticSpurious(SyntheticShapes):
    """:class:`SyntheticShapes` with the background shortcut on by default: ``rho=0.9`` (the family
    of the background is the class's own in 90 % of the images of every split, else uniform)."""

    def __init__(self, rho: float | None = 0.9, **kwargs: Any):
        super().__init__(rho=rho, **kwargs)
