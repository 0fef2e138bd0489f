"""Showing a model only part of an image: partitions into players and the two ways to hide a player.

Set games (Shapley, MoXI, SMDL) and perturbation metrics (insertion/deletion, fidelity) share these:

- ``Partition``: players as a label map per image (patch grid, super-pixels, SMDL sub-regions).
- ``FillMasker``: hidden pixels take a fill value (0 in normalised space = the mean colour by
  default; raw black, blur or a constant are selectable). Works on any model.
- ``TokenDropMasker``: hidden patches are absent from a ViT's token sequence (MoXI's masking).

Both maskers take ``keep[B, M, P]`` (M subsets of P players per image) and return logits
``[B, M, classes]``, evaluating at most ``max_batch`` rows per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.errors import InputError
from reproduce.models.adapter import ModelAdapter


@dataclass(frozen=True)
class Partition:
    """Players as integer labels ``[B, H, W]`` in ``0..num_players-1`` (every label used)."""

    labels: torch.Tensor
    num_players: int
    grid: tuple[int, int] | None = None  # set for patch grids: the token-drop masker needs it

    @staticmethod
    def patch_grid(batch: int, height: int, width: int, grid: tuple[int, int] | int, device=None) -> "Partition":
        gh, gw = (grid, grid) if isinstance(grid, int) else grid
        if gh < 1 or gw < 1 or height % gh or width % gw:
            raise InputError(
                f"A {gh}x{gw} player grid does not divide a {height}x{width} image; choose a grid "
                f"whose sides divide the image (e.g. {_divisor_hint(height)})."
            )
        rows = torch.arange(height, device=device) // (height // gh)
        cols = torch.arange(width, device=device) // (width // gw)
        labels = (rows[:, None] * gw + cols[None, :]).expand(batch, height, width)
        return Partition(labels=labels, num_players=gh * gw, grid=(gh, gw))

    @staticmethod
    def from_labels(labels: torch.Tensor) -> "Partition":
        """Regions from a label map ``[B, H, W]`` (e.g. super-pixels); labels are made contiguous."""
        if labels.dim() == 2:
            labels = labels.unsqueeze(0)
        if labels.dim() != 3 or labels.numel() == 0:
            raise InputError(f"Region labels must be a non-empty [B, H, W] map, got {tuple(labels.shape)}.")
        labels = labels.long()
        relabelled = []
        counts = []
        for lab in labels:  # per image: unique labels -> 0..P_b-1
            uniq, inv = torch.unique(lab, return_inverse=True)
            relabelled.append(inv)
            counts.append(len(uniq))
        if len(set(counts)) != 1:
            raise InputError(
                f"Images in the batch have different region counts {counts}; evaluate them one at a "
                "time or pad the partitions to the same number of regions."
            )
        return Partition(labels=torch.stack(relabelled), num_players=counts[0])

    def to_pixels(self, keep: torch.Tensor) -> torch.Tensor:
        """Player keep-weights ``[B, M, P]`` -> pixel keep-weights ``[B, M, H, W]``."""
        b, m, p = keep.shape
        if p != self.num_players:
            raise InputError(f"keep has {p} players but the partition has {self.num_players}.")
        flat = self.labels.reshape(self.labels.shape[0], 1, -1).expand(b, m, -1)
        return torch.gather(keep, 2, flat).reshape(b, m, *self.labels.shape[-2:])

    def masks(self) -> torch.Tensor:
        """One boolean mask per player: ``[B, P, H, W]``."""
        return F.one_hot(self.labels, self.num_players).permute(0, 3, 1, 2).bool()


def _divisor_hint(n: int) -> str:
    return ", ".join(str(d) for d in range(2, min(n, 17)) if n % d == 0) or "1"


FILL_CHOICES = ("mean", "black", "blur")


def fill_tensor(adapter: ModelAdapter, x: torch.Tensor, fill: str | float | torch.Tensor, blur_sigma: float = 5.0) -> torch.Tensor:
    """What hidden pixels become, broadcastable to ``x`` ``[B, C, H, W]`` (normalised space)."""
    if isinstance(fill, torch.Tensor):
        return fill.to(device=x.device, dtype=x.dtype)
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        return torch.full((1, 1, 1, 1), float(fill), device=x.device, dtype=x.dtype)
    if fill == "mean":  # 0 in normalised space is the mean colour of the model's data config
        return torch.zeros((1, 1, 1, 1), device=x.device, dtype=x.dtype)
    if fill == "black":
        return adapter.data_config.value_of(0.0, x).unsqueeze(0)
    if fill == "blur":
        return gaussian_blur(x, blur_sigma)
    raise InputError(f"Unknown fill {fill!r}: use one of {FILL_CHOICES}, a number or a tensor.")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect" if radius < min(x.shape[-2:]) else "replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# On a CPU a forward is fastest while its activations stay in cache, so rows per forward are capped
# by pixels, not only by ``max_batch`` (no-grad forwards, channels-last inputs, 2 threads, measured
# 2026-12-02): ResNet-10-T at 64 px runs at 1.32 ms per row in batches of 64 and 2.33 ms in batches
# of 256; EfficientNet-Lite0 at 224 px at 16.3-17.9 ms per row in batches of 4 and 17.4-20.6 in
# batches of 16 (channels-last weights on top of channels-last inputs: no faster, 19.4-19.6 ms).
# The cap is 64 rows of 64x64 pixels (5 rows at 224 px, where it took the moxi_photos table from 589
# to 394 s against the 256 rows of ``max_batch``). A GPU keeps ``max_batch``.
CPU_PIXELS_PER_FORWARD = 64 * 64 * 64


def forward_rows(max_batch: int, x: torch.Tensor) -> int:
    """Rows per forward pass for images like ``x`` (``[..., H, W]``): ``max_batch``, capped on a CPU."""
    if x.device.type != "cpu":
        return max_batch
    return max(1, min(max_batch, CPU_PIXELS_PER_FORWARD // (x.shape[-2] * x.shape[-1])))


class FillMasker:
    """Hide pixels by blending towards a fill value: ``x * keep + fill * (1 - keep)``."""

    def __init__(self, model: nn.Module, fill: str | float | torch.Tensor = "mean", max_batch: int = 256, blur_sigma: float = 5.0):
        self.adapter = ModelAdapter(model)
        self.fill = fill
        self.max_batch = max_batch
        self.blur_sigma = blur_sigma
        if isinstance(fill, str) and fill not in FILL_CHOICES:
            raise InputError(f"Unknown fill {fill!r}: use one of {FILL_CHOICES}, a number or a tensor.")

    def forward_pixels(self, x: torch.Tensor, keep_pixels: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, M, classes]`` for pixel keep-weights ``[B, M, H, W]`` in [0, 1]."""
        b, m = keep_pixels.shape[:2]
        fill = fill_tensor(self.adapter, x, self.fill, self.blur_sigma).unsqueeze(1)  # [B|1, 1, C|1, H|1, W|1]
        rows = forward_rows(self.max_batch, x)
        images = min(max(b, 1), rows)  # images per forward; more than `rows` images are split too
        rows_per_image = max(1, rows // images)
        chunks = []
        for i in range(0, b, images):
            xi, ki = x[i : i + images], keep_pixels[i : i + images]
            fi = fill[i : i + images] if fill.shape[0] == b > 1 else fill  # a fill per image, or one for all
            outs = []
            for start in range(0, m, rows_per_image):
                k = ki[:, start : start + rows_per_image].unsqueeze(2).to(x.dtype)  # [b', m', 1, H, W]
                masked = (xi.unsqueeze(1) * k + fi * (1 - k)).flatten(0, 1)
                if not self.adapter.is_vit:  # NHWC convolutions: 1.1-1.6x faster CNN forwards on CPU
                    masked = masked.contiguous(memory_format=torch.channels_last)
                outs.append(self.adapter.model(masked).reshape(xi.shape[0], k.shape[1], -1))
            chunks.append(torch.cat(outs, dim=1))
        return torch.cat(chunks, dim=0)

    def __call__(self, x: torch.Tensor, partition: Partition, keep: torch.Tensor) -> torch.Tensor:
        return self.forward_pixels(x, partition.to_pixels(keep.to(x.dtype)))


class TokenDropMasker:
    """Hide patches by dropping their tokens (ViT only); players must be the token grid."""

    def __init__(self, model: nn.Module, max_batch: int = 256):
        self.adapter = ModelAdapter(model)
        self.adapter.require_vit("The token-drop masker")
        self.max_batch = max_batch

    def check_partition(self, partition: Partition) -> None:
        if partition.grid != self.adapter.token_grid:
            raise InputError(
                f"Token dropping needs the players to be the {self.adapter.token_grid} token grid, "
                f"got {partition.grid or f'{partition.num_players} free-form regions'}; use a "
                "FillMasker for other partitions."
            )

    def __call__(self, x: torch.Tensor, partition: Partition, keep: torch.Tensor) -> torch.Tensor:
        self.check_partition(partition)
        keep = keep.bool()
        b, m, p = keep.shape
        tokens = self.adapter.embed_tokens(x)
        counts = keep.sum(-1)  # [B, M]
        logits = torch.empty(b, m, self.adapter.num_classes or 0, device=x.device, dtype=tokens.dtype)
        # One transformer batch per subset size: every sequence in a batch must have equal length.
        for k in torch.unique(counts).tolist():
            rows = (counts == k).nonzero()  # [R, 2] (image, subset), image-major
            idx = torch.sort((~keep[rows[:, 0], rows[:, 1]]).to(torch.int8), dim=-1, stable=True).indices[:, :k]
            each = len(rows) // b
            if b <= self.max_batch and each * b == len(rows) and bool((rows[:, 0].view(b, each) == torch.arange(b, device=x.device)[:, None]).all()):
                # every image has `each` subsets of this size (greedy steps, curves): index the shared
                # token tensor directly instead of copying each row's tokens
                subsets, idx = rows[:, 1].view(b, each), idx.view(b, each, k)
                step = max(1, self.max_batch // b)
                for s in range(0, each, step):
                    logits[torch.arange(b, device=x.device)[:, None], subsets[:, s : s + step]] = \
                        self.adapter.forward_kept_tokens(tokens, idx[:, s : s + step])
                continue
            for s in range(0, len(rows), self.max_batch):
                r = rows[s : s + self.max_batch]
                out = self.adapter.forward_kept_tokens(tokens[r[:, 0]], idx[s : s + self.max_batch].unsqueeze(1))
                logits[r[:, 0], r[:, 1]] = out[:, 0]
        return logits
