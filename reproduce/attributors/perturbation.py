"""Perturbation attributors: sliding-window occlusion and RISE, plus the batched mask evaluator
they share with HSIC-attribution (``hsic.py``).

Every method here shows the model the input with some pixels replaced by a fill (``"mean"`` = 0
in normalised space by default, ``"black"``, ``"blur"``, a number or a tensor; see
:func:`reproduce.models.masking.fill_tensor`) and reads the target's output. The masks of one
call are shared by every image of the batch; images and masks are flattened into forward batches
of ``batch_size`` rows, with the masks built chunk by chunk on the input's device.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.checks import check_choice, positive_int
from reproduce.attributors.base import Attributor
from reproduce.attributors.registry import register
from reproduce.errors import ConfigError, InputError
from reproduce.models import FillMasker

OUTPUTS = ("logit", "probability")


def check_output(output: str) -> str:
    check_choice("output", output, OUTPUTS)
    return output


def target_output(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """The target's logit or softmax probability: logits ``[B, M, K]`` -> ``[B, M]``."""
    values = logits.softmax(dim=-1) if output == "probability" else logits
    index = target.view(-1, 1, 1).expand(-1, logits.shape[1], 1)
    return values.gather(-1, index).squeeze(-1)


def masked_target_outputs(
    masker: FillMasker,
    x: torch.Tensor,
    target: torch.Tensor,
    num_masks: int,
    masks_of: Callable[[int, int], torch.Tensor],
    batch_size: int,
    output: str,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Evaluate ``num_masks`` keep-masks, shared by every image, in forward batches.

    ``masks_of(start, stop)`` builds keep-masks ``[stop - start, H, W]`` in [0, 1] (1 = pixel kept)
    on ``x.device``. Yields ``(slice, masks, outputs [B, stop - start])`` per chunk, so callers can
    reduce on the fly without holding all masks.
    """
    b = x.shape[0]
    per_chunk = max(1, batch_size // b)
    with torch.no_grad():
        for start in range(0, num_masks, per_chunk):
            stop = min(start + per_chunk, num_masks)
            masks = masks_of(start, stop)
            logits = masker.forward_pixels(x, masks.unsqueeze(0).expand(b, -1, -1, -1))
            yield slice(start, stop), masks, target_output(logits, target, output)


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2:
        raise ConfigError(f"{name} must be an int or a pair (height, width), got {value!r}.")
    return positive_int(name, pair[0]), positive_int(name, pair[1])


def window_starts(size: int, window: int, stride: int) -> torch.Tensor:
    """Captum's window positions: ``ceil((size - window) / stride) + 1`` starts ``k * stride``
    (the last window may overhang the border and is clipped)."""
    return torch.arange(math.ceil((size - window) / stride) + 1) * stride


@register("occlusion")
class Occlusion(Attributor):
    """Sliding-window occlusion (Zeiler & Fergus 2014) with the semantics of Captum's ``Occlusion``.

    A window of ``window`` pixels (all channels) slides with ``stride``; each pixel's attribution
    is the mean, over the windows covering it, of ``f(x) - f(x with the window filled)`` where
    ``f`` is the target's logit (or probability). Equal to Captum's per-channel attribution with
    ``sliding_window_shapes=(C, *window)``, ``strides=(C, *stride)`` and the fill as baseline.

    Args:
        window: window size, int or (height, width) (default 10 with stride 5: SMDL's Xplique
            occlusion setting).
        stride: step, int or (height, width); at most the window so every pixel is covered.
        fill: what occluded pixels become (``"mean"``, ``"black"``, ``"blur"``, number, tensor).
        output: ``"logit"`` (default, as Captum on a logit model) or ``"probability"``.
        batch_size: rows (occluded images) per forward pass.
        normalize: see :class:`Attributor`.
    """

    smoke_options = {"window": 16, "stride": 16}

    def __init__(
        self,
        model: nn.Module,
        window: int | tuple[int, int] = 10,
        stride: int | tuple[int, int] = 5,
        fill: str | float | torch.Tensor = "mean",
        output: str = "logit",
        batch_size: int = 256,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        self.window = _pair(window, "window")
        self.stride = _pair(stride, "stride")
        if self.stride[0] > self.window[0] or self.stride[1] > self.window[1]:
            raise ConfigError(
                f"stride {self.stride} is larger than window {self.window}: pixels between windows "
                "would never be occluded. Use a stride at most the window size."
            )
        self.output = check_output(output)
        self.batch_size = positive_int("batch_size", batch_size)
        self.masker = FillMasker(model, fill=fill, max_batch=self.batch_size)

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        (wh, ww), (sh, sw) = self.window, self.stride
        if wh > height or ww > width:
            raise InputError(f"window {self.window} exceeds the {height}x{width} input; use a smaller window.")
        pixels_h = torch.arange(height, device=x.device)
        pixels_w = torch.arange(width, device=x.device)
        starts_h = window_starts(height, wh, sh).to(x.device)
        starts_w = window_starts(width, ww, sw).to(x.device)
        # Windows are outer products of a row band and a column band.
        rows = ((pixels_h >= starts_h[:, None]) & (pixels_h < starts_h[:, None] + wh)).to(x.dtype)  # [nh, H]
        cols = ((pixels_w >= starts_w[:, None]) & (pixels_w < starts_w[:, None] + ww)).to(x.dtype)  # [nw, W]
        nh, nw = rows.shape[0], cols.shape[0]

        def keep_masks(start: int, stop: int) -> torch.Tensor:
            k = torch.arange(start, stop, device=x.device)
            return 1 - rows[k // nw].unsqueeze(2) * cols[k % nw].unsqueeze(1)

        with torch.no_grad():
            clean = target_output(self.model(x).unsqueeze(1), target, self.output)  # [B, 1]
        deltas = torch.empty(b, nh * nw, device=x.device, dtype=x.dtype)
        chunks = masked_target_outputs(self.masker, x, target, nh * nw, keep_masks, self.batch_size, self.output)
        for part, _, scores in chunks:
            deltas[:, part] = clean - scores
        total = torch.einsum("bij,ih,jw->bhw", deltas.view(b, nh, nw), rows, cols)
        coverage = rows.sum(0)[:, None] * cols.sum(0)[None, :]
        return total / coverage


@register("rise")
class RISE(Attributor):
    """RISE (Petsiuk et al. 2018): ``S = sum_m f(x * M_m) M_m / (n_masks * p1)``.

    Masks follow the paper: a ``grid_size x grid_size`` grid of cells kept with probability
    ``p1``, upsampled bilinearly to ``(grid_size + 1) * ceil(H / grid_size)`` pixels per side and
    cropped to ``H x W`` at a random shift in ``[0, cell)``. The grids and shifts come from
    ``seed`` alone, so every image of every batch sees the same masks. ``f`` is the softmax
    probability of the target (the paper's choice); the hidden part takes ``fill``. The paper's
    code resizes with scikit-image (``mode="reflect"``); ``F.interpolate`` clamps at the border
    instead, which only changes the outermost half cell of the enlarged canvas.

    Args:
        n_masks: number of masks N (4000 = SMDL's Xplique setting).
        grid_size: cells per side of the low-resolution grid (7 in the paper and Xplique).
        p1: probability that a cell is kept.
        seed: seed of the mask generator.
        fill: what hidden pixels become (``"mean"`` = 0 in normalised space, the paper's ``I * M``
            on a normalised input).
        output: ``"probability"`` (default) or ``"logit"``.
        batch_size: rows (masked images) per forward pass.
        normalize: see :class:`Attributor`.
    """

    smoke_options = {"n_masks": 64}

    def __init__(
        self,
        model: nn.Module,
        n_masks: int = 4000,
        grid_size: int = 7,
        p1: float = 0.5,
        seed: int = 0,
        fill: str | float | torch.Tensor = "mean",
        output: str = "probability",
        batch_size: int = 256,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        self.n_masks = positive_int("n_masks", n_masks)
        self.grid_size = positive_int("grid_size", grid_size)
        if not 0.0 < float(p1) <= 1.0:
            raise ConfigError(f"p1 (probability of keeping a cell) must be in (0, 1], got {p1!r}.")
        self.p1 = float(p1)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        self.seed = seed
        self.output = check_output(output)
        self.batch_size = positive_int("batch_size", batch_size)
        self.masker = FillMasker(model, fill=fill, max_batch=self.batch_size)
        self._designs: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _design(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution grids ``[N, s, s]`` and pixel shifts ``[N, 2]`` for this input size (CPU)."""
        key = (height, width)
        if key not in self._designs:
            s = self.grid_size
            generator = torch.Generator().manual_seed(self.seed)
            grids = (torch.rand(self.n_masks, s, s, generator=generator) < self.p1).float()
            cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
            shifts = torch.stack(
                [
                    torch.randint(0, cell_h, (self.n_masks,), generator=generator),
                    torch.randint(0, cell_w, (self.n_masks,), generator=generator),
                ],
                dim=1,
            )
            self._designs[key] = (grids, shifts)
        return self._designs[key]

    def masks(self, height: int, width: int, start: int = 0, stop: int | None = None, device=None) -> torch.Tensor:
        """Masks ``start..stop`` as ``[m, height, width]`` soft keep-weights in [0, 1]."""
        stop = self.n_masks if stop is None else stop
        grids, shifts = self._design(height, width)
        grids = grids[start:stop].to(device)
        shifts = shifts[start:stop].to(device)
        s = self.grid_size
        up = ((s + 1) * math.ceil(height / s), (s + 1) * math.ceil(width / s))
        canvas = F.interpolate(grids.unsqueeze(1), size=up, mode="bilinear", align_corners=False).squeeze(1)
        rows = shifts[:, 0, None] + torch.arange(height, device=device)  # [m, H]
        cols = shifts[:, 1, None] + torch.arange(width, device=device)  # [m, W]
        index = torch.arange(canvas.shape[0], device=device)[:, None, None]
        return canvas[index, rows[:, :, None], cols[:, None, :]]

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        saliency = torch.zeros(b, height, width, device=x.device, dtype=x.dtype)

        def keep_masks(start: int, stop: int) -> torch.Tensor:
            return self.masks(height, width, start, stop, device=x.device).to(x.dtype)

        chunks = masked_target_outputs(self.masker, x, target, self.n_masks, keep_masks, self.batch_size, self.output)
        for _, masks, scores in chunks:
            saliency += torch.einsum("bm,mhw->bhw", scores, masks)
        return saliency / (self.n_masks * self.p1)
