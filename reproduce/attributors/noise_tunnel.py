"""Noise tunnels around any gradient attributor: ``smoothgrad`` and ``sparsified_smoothgrad``.

A noise tunnel evaluates its base method (``saliency``, ``input_x_gradient``,
``integrated_gradients`` or any :class:`~reproduce.attributors.gradient.GradientAttributor`) on
``n_samples`` noisy copies ``x + sigma * (max(x) - min(x)) * eps_j`` of each image and averages the
per-copy maps. Per copy it runs the base's stages 1-2 (signed attribution, then ``abs``), passes the
result through an optional per-sample transform (the hook the super-pixel wrapper uses to group
each copy's gradient before any nonlinearity), then :meth:`SmoothGrad.per_sample` (identity for
SmoothGrad, sparsification for Sparsified SmoothGrad); the average is finally reduced over
channels with the base's ``channel_reduction`` (after averaging, as Captum's ``NoiseTunnel``
does).

Noise rule (what makes the maps reproducible and batch-independent): the standard normal draw
``eps_j`` of copy ``j`` comes from a CPU generator seeded with ``(seed, model key, j)`` and is
shared by every image; each image scales it by ``sigma`` times its own value range (in the model's
normalised space, per image, like the SmoothGrad paper's "noise level"). An image's map therefore
depends only on the image, the model, ``seed``, ``n_samples`` and ``sigma``: not on its
batch-mates, its position in the batch, ``batch_size`` or the device (the draw is made on the CPU
and moved).

The model key (``noise="per_model"``, the default) is a fingerprint of the model's weights
(:func:`model_fingerprint`), so two different models draw independent noise with the same options
(the stability protocol explains one image with two re-trained models: shared noise would make the
estimator's own variance cancel between them), while one model always draws the same noise.
``noise="shared"`` drops the key: every model sees the same ``n_samples`` draws (``(seed, j)``).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Iterable

import numpy as np
import torch
from torch import nn

from reproduce.checks import check_choice, positive_int
from reproduce.attributors.base import Attributor
from reproduce.attributors.gradient import GradientAttributor
from reproduce.attributors.registry import available, create, get_class, register
from reproduce.errors import ConfigError


NOISE_MODES = ("per_model", "shared")
# Elements of each weight tensor that enter the fingerprint: enough to tell trained models apart,
# bounded so that fingerprinting a large model stays cheap.
FINGERPRINT_ELEMENTS = 4096


def copy_seed(seed: int, copy: int, model_key: int | None = None) -> int:
    """The generator seed of noisy copy ``copy``: one generator per copy, so copy j is the same
    draw whatever the chunking. Torch's CPU generator keeps 32 bits of a seed, hence the mixing."""
    entropy = [seed, copy] if model_key is None else [seed, model_key, copy]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def model_fingerprint(model: nn.Module) -> int:
    """A 64-bit key of a model's weights: names, shapes and the first values of every parameter and
    buffer (as float64 on the CPU), so it is the same on every device and run for the same weights."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        values = tensor.detach().flatten()[:FINGERPRINT_ELEMENTS].to("cpu", torch.float64)
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(values.numpy().tobytes())
    return int.from_bytes(digest.digest(), "little")


def gradient_attributors() -> list[str]:
    """Registered methods a noise tunnel can wrap."""
    return [n for n in available() if issubclass(get_class(n), GradientAttributor)]


@register("smoothgrad")
class SmoothGrad(Attributor):
    """SmoothGrad (Smilkov et al., 2017): the average of the base map over noisy copies.

    Args:
        base: registry name of a gradient attributor (default ``saliency``: mean |gradient|,
            then the maximum over channels).
        base_options: options of the base (e.g. ``{"steps": 20}`` for IG, ``{"abs": False}``).
        n_samples: noisy copies per image.
        sigma: noise standard deviation as a fraction of each image's value range ``max - min``
            (the SmoothGrad paper recommends 0.1-0.2).
        seed: selects the noise draws (see the module docstring).
        noise: ``"per_model"`` (default: the draws also depend on the model's weights, so two
            models get independent noise) or ``"shared"`` (the same draws for every model).
        batch_size: at most this many noisy copies (all images together) are handed to the base
            per pass; with an ``integrated_gradients`` base each copy costs ``steps`` rows, batched
            by the base's own ``internal_batch_size``.
    """

    smoke_options: ClassVar[dict] = {"n_samples": 4}

    def __init__(
        self,
        model: nn.Module,
        base: str = "saliency",
        base_options: dict | None = None,
        n_samples: int = 50,
        sigma: float = 0.15,
        seed: int = 0,
        noise: str = "per_model",
        batch_size: int = 64,
        normalize: str | None = None,
    ):
        super().__init__(model, normalize=normalize)
        base_options = dict(base_options or {})
        if "normalize" in base_options:
            raise ConfigError(f"Set normalize on {self.name} itself, not in base_options: the base's maps are averaged raw.")
        if not issubclass(get_class(base), GradientAttributor):
            raise ConfigError(
                f"{self.name} needs a gradient attributor as base, got {base!r}; use one of {gradient_attributors()}."
            )
        self.base: GradientAttributor = create(base, model, **base_options)
        self.n_samples = positive_int("n_samples", n_samples)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 <= sigma < float("inf"):
            raise ConfigError(f"sigma must be a non-negative fraction of the image range (e.g. 0.15), got {sigma!r}.")
        self.sigma = float(sigma)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ConfigError(f"seed must be an integer in [0, 2**31), got {seed!r}.")
        self.seed = seed
        self.noise_mode = check_choice("noise", noise, NOISE_MODES)
        self.model_key = model_fingerprint(model) if noise == "per_model" else None
        self.batch_size = positive_int("batch_size", batch_size)

    def noise(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The perturbations of copies ``start..stop-1``: ``[B, stop - start, C, H, W]``."""
        stop = self.n_samples if stop is None else stop
        draws = [
            torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(copy_seed(self.seed, j, self.model_key)))
            for j in range(start, stop)
        ]
        eps = torch.stack(draws).to(device=x.device, dtype=x.dtype)
        flat = x.detach().flatten(1)
        scale = self.sigma * (flat.amax(1) - flat.amin(1))
        return scale.view(-1, 1, 1, 1, 1) * eps.unsqueeze(0)

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        """Post-process each copy's map ``[B, m, ...]`` before averaging (identity here)."""
        return maps

    def _chunks(self, b: int) -> list[tuple[int, int]]:
        """The copies ``start..stop-1`` of each pass: at most ``batch_size`` rows of ``b`` images."""
        per_pass = max(1, self.batch_size // b)
        return [(start, min(start + per_pass, self.n_samples)) for start in range(0, self.n_samples, per_pass)]

    def _signed_copies(self, x: torch.Tensor, target: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The base's signed attribution of copies ``start..stop-1``: ``[B, stop - start, C, H, W]``."""
        b, m = x.shape[0], stop - start
        noisy = (x.unsqueeze(1) + self.noise(x, start, stop)).flatten(0, 1)
        return self.base.signed(noisy, target.repeat_interleave(m)).unflatten(0, (b, m))

    def _average(self, copies: Iterable[torch.Tensor]) -> torch.Tensor:
        """``per_sample`` of each pass's copy maps, summed pass by pass, over ``n_samples``."""
        total = None
        for maps in copies:
            part = self.per_sample(maps).sum(1)
            total = part if total is None else total + part
        return total / self.n_samples

    def smooth(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Average over the noisy copies of ``per_sample`` of the base's elementwise stage (``abs`` by
        default) of their signed attribution: ``[B, C, H, W]`` (each pass's copies are reduced
        before the next pass, so memory holds one pass)."""
        return self._average(self.base.elementwise(self._signed_copies(x, target, start, stop))
                             for start, stop in self._chunks(x.shape[0]))

    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base.reduce_channels(self.smooth(x, target))

    def group_input(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each noisy copy's signed, channel-summed attribution ``[B, n_samples, H, W]``: grouped
        before the base's ``abs`` and before :meth:`per_sample` (the sparsification of Sparsified
        SmoothGrad), as the super-pixel paper requires."""
        return torch.cat([self._signed_copies(x, target, start, stop).sum(-3)
                          for start, stop in self._chunks(x.shape[0])], dim=1)

    def finish_grouped(self, grouped: torch.Tensor) -> torch.Tensor:
        """The base's ``abs`` and :meth:`per_sample` of every grouped copy, then their average
        (summed in the passes' order, as :meth:`smooth` does)."""
        return self._average(self.base.elementwise(grouped[:, start:stop]) for start, stop in self._chunks(grouped.shape[0]))


@register("sparsified_smoothgrad")
class SparsifiedSmoothGrad(SmoothGrad):
    """Sparsified SmoothGrad (Levine, Singla & Feizi, NeurIPS 2019): sparsify each copy, then average.

    Each noisy copy's map (``|gradient|`` per element by default: all ``C*H*W`` elements are
    ranked, as in the reference implementation) is sparsified before averaging:

    - values at or above the ``K_s``-th largest of the ``D`` elements become 1, with
      ``K_s = max(1, floor(saturate * D))``;
    - the other values among the top ``K = max(1, floor(tau * D))`` are divided by that
      saturation threshold (so they lie in (0, 1));
    - everything else becomes 0.

    ``saturate == tau`` gives the plain binary top-K rule (top-K -> 1, others -> 0). The defaults
    (``tau=0.1``, ``saturate=0.01``, ``sigma=0.1``) are those of the sparsified-SmoothGrad explainer
    in Ye & Farnia's MoreauGrad code (the super-pixel paper's lab); the certified paper's text was
    not available to check them. Elements tied with a threshold are all kept, so the number kept is
    at least K and a constant region (e.g. a super-pixel) is never split; only positive values are
    kept (use a base with ``abs=True``, the default, to rank magnitudes).
    """

    smoke_options: ClassVar[dict] = {"n_samples": 4}

    def __init__(self, model: nn.Module, sigma: float = 0.1, tau: float = 0.1, saturate: float = 0.01, **kwargs: Any):
        super().__init__(model, sigma=sigma, **kwargs)
        for name, value in (("tau", tau), ("saturate", saturate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"{name} must be a fraction in (0, 1], got {value!r}.")
        if saturate > tau:
            raise ConfigError(f"saturate ({saturate}) must not exceed tau ({tau}): saturated elements are among the kept ones.")
        self.tau = float(tau)
        self.saturate = float(saturate)

    def per_sample(self, maps: torch.Tensor) -> torch.Tensor:
        flat = maps.flatten(2)
        d = flat.shape[-1]
        k_keep = max(1, int(self.tau * d))
        k_sat = max(1, int(self.saturate * d))
        top = flat.topk(k_keep, dim=-1).values
        keep_at = top[..., k_keep - 1 : k_keep]
        sat_at = top[..., k_sat - 1 : k_sat]
        scaled = torch.where(sat_at > 0, (flat / sat_at.clamp_min(torch.finfo(flat.dtype).tiny)).clamp(max=1), 1.0)
        sparse = torch.where((flat >= keep_at) & (flat > 0), scaled, torch.zeros_like(flat))
        return sparse.view_as(maps)
