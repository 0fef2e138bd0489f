"""Super-pixel segmenters (scikit-image) behind one call, with a content-keyed cache.

``Segmenter(name, options)(x, data_config)`` turns a batch in the model's normalised space into
label maps ``LongTensor [B, H, W]`` (labels ``0..K_b-1`` per image) on ``x.device``. Segmentation
runs on the de-normalised image clipped to [0, 1], per image on the CPU (scikit-image has no
batched or GPU path); the result is cached by (image content, segmenter, resolved parameters), so
several attributors explaining the same images segment each image once.

Algorithms (all from ``skimage.segmentation``; unknown option names are rejected):

- ``slic``: ``n_segments`` 50 below 128 px (100 from 128 px), ``compactness`` 10, ``sigma`` 1.
  SLIC merges fragments smaller than a fraction of the target size, so on pure noise it can
  collapse to one segment: raise ``compactness`` (e.g. 100) there.
- ``quickshift``: LIME's ``kernel_size`` 4, ``max_dist`` 200, ``ratio`` 0.2 at 224 px; the kernel
  scales with the image side (1 at 64 px).
- ``felzenszwalb``: ``scale`` 100, ``sigma`` 0.5, ``min_size`` 50 px at 224 px scaled with the
  image area (at least 5).
- ``watershed``: compact watershed on the Sobel gradient of the grey image (the form LIME and
  XRAI users take): ``markers`` 50 below 128 px (100 from 128 px), ``compactness`` 0.001.

And one control that is not an algorithm: ``pixel`` makes every pixel its own segment. A
super-pixel method with it is the singleton-segment limit of its grouped version (for the simple
gradient ``|sum_c g|`` per pixel, per noisy copy for the SmoothGrad family), so comparing the pixel
method, the ``pixel`` control and a real segmenter separates the change of channel reduction
(e.g. ``max_c |g|`` -> ``|sum_c g|``) from the effect of grouping.
"""

from __future__ import annotations

import hashlib
import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from skimage import color, filters, segmentation

from reproduce.errors import ConfigError, InputError
from reproduce.models import DataConfig


def _side(height: int, width: int) -> int:
    return min(height, width)


def _compact_watershed(image: np.ndarray, markers: int, compactness: float, **kwargs: Any) -> np.ndarray:
    """Compact watershed on the Sobel gradient magnitude of the grey image."""
    return segmentation.watershed(filters.sobel(color.rgb2gray(image)), markers=markers, compactness=compactness, **kwargs)


@dataclass(frozen=True)
class SegmenterSpec:
    run: Callable[..., np.ndarray]
    defaults: Callable[[int, int], dict[str, Any]]
    more_segments: str  # which parameter to change when an image comes out as one segment
    fixed: tuple[str, ...] = ()  # keyword arguments set here, not by the user


def _pixel_segments(image: np.ndarray) -> np.ndarray:
    """Every pixel its own segment (labels in raster order)."""
    return np.arange(image.shape[0] * image.shape[1]).reshape(image.shape[:2])


SEGMENTERS: dict[str, SegmenterSpec] = {
    "slic": SegmenterSpec(
        run=lambda image, **p: segmentation.slic(image, channel_axis=-1, start_label=0, **p),
        defaults=lambda h, w: {"n_segments": 100 if _side(h, w) >= 128 else 50, "compactness": 10.0, "sigma": 1.0},
        more_segments="increase n_segments or compactness (SLIC merges fragments of noisy images: try compactness=100)",
        fixed=("channel_axis", "start_label"),
    ),
    "quickshift": SegmenterSpec(
        run=lambda image, **p: segmentation.quickshift(image, channel_axis=-1, **p),
        defaults=lambda h, w: {"kernel_size": max(1, round(4 * _side(h, w) / 224)), "max_dist": 200.0, "ratio": 0.2},
        more_segments="decrease kernel_size or max_dist",
        fixed=("channel_axis",),
    ),
    "felzenszwalb": SegmenterSpec(
        run=lambda image, **p: segmentation.felzenszwalb(image, channel_axis=-1, **p),
        defaults=lambda h, w: {"scale": 100.0, "sigma": 0.5, "min_size": max(5, round(50 * h * w / 224**2))},
        more_segments="decrease scale or min_size",
        fixed=("channel_axis",),
    ),
    "watershed": SegmenterSpec(
        run=_compact_watershed,
        defaults=lambda h, w: {"markers": 100 if _side(h, w) >= 128 else 50, "compactness": 0.001},
        more_segments="increase markers",
    ),
    "pixel": SegmenterSpec(run=_pixel_segments, defaults=lambda h, w: {}, more_segments="use a larger image"),
}


def _accepted(name: str) -> set[str]:
    if name == "pixel":
        return set()
    fn = {
        "slic": segmentation.slic,
        "quickshift": segmentation.quickshift,
        "felzenszwalb": segmentation.felzenszwalb,
        "watershed": segmentation.watershed,
    }[name]
    params = list(inspect.signature(fn).parameters)[1:]  # drop the image argument
    return set(params) - set(SEGMENTERS[name].fixed) - {"image", "mask", "return_tree"}


class SegmentationCache:
    """Least-recently-used label maps keyed by (image bytes, segmenter, parameters).

    ``hits``/``misses`` count look-ups (one per image) so callers and tests can check reuse.
    """

    def __init__(self, max_entries: int = 1024):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ConfigError(f"max_entries must be a non-negative integer, got {max_entries!r}.")
        self.max_entries = max_entries
        self._store: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> np.ndarray | None:
        labels = self._store.get(key)
        if labels is None:
            self.misses += 1
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return labels

    def put(self, key: tuple, labels: np.ndarray) -> None:
        if self.max_entries == 0:
            return
        self._store[key] = labels
        self._store.move_to_end(key)
        while len(self._store) > self.max_entries:
            self._store.popitem(last=False)

    def clear(self) -> None:
        self._store.clear()
        self.hits = self.misses = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._store)}


DEFAULT_CACHE = SegmentationCache()


class Segmenter:
    """One scikit-image algorithm with its parameters; call it on a normalised batch.

    Args:
        name: one of :data:`SEGMENTERS`.
        options: parameters passed to the algorithm; the defaults above fill the rest (they
            depend on the image size: see :meth:`params`).
        cache: where label maps are kept (the process-wide :data:`DEFAULT_CACHE` by default).
    """

    def __init__(self, name: str = "slic", options: dict[str, Any] | None = None, cache: SegmentationCache | None = None):
        if name not in SEGMENTERS:
            raise ConfigError(f"Unknown segmenter {name!r}; use one of {sorted(SEGMENTERS)}.")
        options = dict(options or {})
        unknown = sorted(set(options) - _accepted(name))
        if unknown:
            raise ConfigError(f"Segmenter {name!r} has no option(s) {unknown}; it accepts {sorted(_accepted(name))}.")
        self.name = name
        self.options = options
        self.cache = DEFAULT_CACHE if cache is None else cache

    def params(self, height: int, width: int) -> dict[str, Any]:
        """The parameters used for ``height x width`` images (defaults overridden by options)."""
        return {**SEGMENTERS[self.name].defaults(height, width), **self.options}

    def __call__(self, x: torch.Tensor, data_config: DataConfig) -> torch.Tensor:
        b, c, h, w = x.shape
        if c not in (1, 3):
            raise InputError(f"Super-pixel segmenters need 1- or 3-channel images, got {c} channels.")
        params = self.params(h, w)
        images = data_config.denormalize(x.detach()).clamp(0, 1).to("cpu", torch.float32)
        images = images.expand(b, 3, h, w) if c == 1 else images
        images = images.permute(0, 2, 3, 1).contiguous().numpy()
        spec = SEGMENTERS[self.name]
        signature = (self.name, tuple(sorted((k, repr(v)) for k, v in params.items())))
        labels = []
        for i, image in enumerate(images):
            key = (hashlib.blake2b(image.tobytes(), digest_size=16).digest(), image.shape, signature)
            lab = self.cache.get(key)
            if lab is None:
                lab = self._segment(spec, image, params, i)
                self.cache.put(key, lab)
            labels.append(lab)
        return torch.from_numpy(np.stack(labels)).to(device=x.device, dtype=torch.long)

    def _segment(self, spec: SegmenterSpec, image: np.ndarray, params: dict[str, Any], index: int) -> np.ndarray:
        try:
            raw = spec.run(image, **params)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"Segmenter {self.name!r} rejected its parameters {params}: {err}") from err
        _, contiguous = np.unique(raw, return_inverse=True)
        count = int(contiguous.max()) + 1
        if count < 2:
            raise InputError(
                f"Segmenter {self.name!r} with {params} put all of image {index} into one segment; "
                f"{spec.more_segments}."
            )
        return contiguous.reshape(raw.shape).astype(np.int32)
