"""Train-split augmentation: a declarative recipe of tensor ops applied to an item's image and masks.

A recipe is a preset name or a list of one-key steps, applied in order::

    none                     no augmentation
    light                    [{random_crop: {padding: 4}}, {hflip: {}}]         (CIFAR-10 style)
    comet                    [{random_crop: {padding: 16}}, {hflip: {}}, {rotation: {degrees: 15}}]
                             (COMET's training transform after its resize, for the paper setting)

Steps (``fill`` is the colour of pixels coming from outside the image: ``black`` as torchvision's
default, or ``mean``, the dataset mean = 0 in normalised space):

- ``random_crop: {padding, fill=black}``: pad every side by ``padding`` pixels and cut a random
  window of the original size (torchvision ``RandomCrop(size, padding)``);
- ``hflip: {p=0.5}``: mirror left-right with probability ``p``;
- ``rotation: {degrees, fill=black}``: rotate by an angle uniform in ``[-degrees, degrees]``, nearest
  neighbour (torchvision ``RandomRotation``'s default interpolation).

Every op moves pixels without blending them, so the item's ``mask`` and ``parts`` are moved by the
same op and stay exact (pixels from outside are not evidence); ``box`` is recomputed from the moved
mask. The random draws come from a generator seeded by ``(seed, epoch, index)``, so an item's
augmentation does not depend on the worker, the process or the batch it lands in; they are the draws
torchvision's ``RandomCrop``/``RandomHorizontalFlip``/``RandomRotation`` make, in the same order
(a test checks equality with torchvision's pipeline under the same seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from reproduce.checks import check_choice, check_fraction, check_int, check_number
from reproduce.errors import ConfigError

PRESETS: dict[str, list[dict[str, dict[str, Any]]]] = {
    "none": [],
    "light": [{"random_crop": {"padding": 4}}, {"hflip": {}}],
    "comet": [{"random_crop": {"padding": 16}}, {"hflip": {}}, {"rotation": {"degrees": 15}}],
}
FILLS = ("black", "mean")
_OPTIONS = {"random_crop": {"padding", "fill"}, "hflip": {"p"}, "rotation": {"degrees", "fill"}}


def parse_recipe(recipe: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(op, options)`` steps of a preset name or a step list, every option checked."""
    if recipe is None:
        return []
    if isinstance(recipe, str):
        recipe = PRESETS[check_choice("augment", recipe, PRESETS)]
    if isinstance(recipe, Mapping) or not isinstance(recipe, (list, tuple)):
        raise ConfigError(f"augment must be one of {list(PRESETS)} or a list of steps like "
                          f"[{{random_crop: {{padding: 4}}}}, {{hflip: {{}}}}], got {recipe!r}.")
    steps = []
    for step in recipe:
        if not isinstance(step, Mapping) or len(step) != 1:
            raise ConfigError(f"each augment step is a one-key mapping {{op: {{options}}}}, got {step!r}.")
        ((op, options),) = step.items()
        check_choice("augment step", op, _OPTIONS)
        options = dict(options or {})
        unknown = set(options) - _OPTIONS[op]
        if unknown:
            raise ConfigError(f"augment step {op} takes {sorted(_OPTIONS[op])}, got unknown {sorted(unknown)}.")
        if op == "random_crop":
            options = {"padding": check_int(f"{op}.padding", options.get("padding"), minimum=0),
                       "fill": check_choice(f"{op}.fill", options.get("fill", "black"), FILLS)}
        elif op == "hflip":
            options = {"p": check_fraction("hflip.p", options.get("p", 0.5), open_low=False)}
        else:
            options = {"degrees": check_number("rotation.degrees", options.get("degrees"), non_negative=True),
                       "fill": check_choice(f"{op}.fill", options.get("fill", "black"), FILLS)}
        steps.append((op, options))
    return steps


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator for one item of one epoch (a cheap injective-enough mix of the three numbers)."""
    return torch.Generator().manual_seed(((int(seed) * 1_000_003 + int(epoch)) * 100_000_007 + int(index)) % (1 << 63))


def _crop(stack: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    h, w = stack.shape[-2:]
    padded = F.pad(stack, (padding,) * 4)
    dy, dx = (int(torch.randint(0, 2 * padding + 1, (1,), generator=g)) for _ in range(2))
    return padded[..., dy:dy + h, dx:dx + w]


def _rotate(stack: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    angle = float(torch.empty(1).uniform_(-degrees, degrees, generator=g))
    return TF.rotate(stack, angle, interpolation=InterpolationMode.NEAREST, fill=0.0)


class Augmentation:
    """Apply a recipe (see the module docstring) to items; ``black`` is the normalised colour of a
    black pixel ``[3]`` (0 in pixel space), ``mean`` fills with 0 (the normalised mean)."""

    def __init__(self, recipe: Any, black: torch.Tensor | None = None):
        self.steps = parse_recipe(recipe)
        self.black = torch.zeros(3) if black is None else torch.as_tensor(black, dtype=torch.float32).flatten()

    def __bool__(self) -> bool:
        return bool(self.steps)

    def describe(self) -> list[dict[str, dict[str, Any]]]:
        return [{op: dict(options)} for op, options in self.steps]

    def __call__(self, item: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        if not self.steps:
            return item
        image = item["image"]
        keys = [k for k in ("mask", "parts") if k in item]
        masks = [item[k].reshape(-1, *image.shape[-2:]).to(image.dtype) for k in keys]
        stack = torch.cat([image, *masks])  # moved by one draw per op; stack[:3] = image - offset
        offset = torch.zeros(3, 1, 1, dtype=image.dtype)
        for op, options in self.steps:
            if op == "hflip":
                if float(torch.rand(1, generator=g)) < options["p"]:
                    stack = stack.flip(-1)
                continue
            # Pixels from outside enter as 0: shift the image so that 0 is this op's fill colour.
            fill = (self.black if options["fill"] == "black" else torch.zeros(3)).to(image).view(3, 1, 1)
            stack = torch.cat([stack[:3] + offset - fill, stack[3:]])
            offset = fill
            stack = _crop(stack, options["padding"], g) if op == "random_crop" else _rotate(stack, options["degrees"], g)
        out = {**item, "image": (stack[:3] + offset).contiguous()}
        for key, moved in zip(keys, stack[3:].split([m.shape[0] for m in masks])):
            out[key] = (moved > 0.5).reshape(item[key].shape)
        if "box" in item and "mask" in out:
            out["box"] = _tight_box(out["mask"])
        return out


def _tight_box(mask: torch.Tensor) -> torch.Tensor:
    """``(x0, y0, x1, y1)`` exclusive max of a bool ``[H, W]`` mask; zeros when empty."""
    rows, cols = mask.any(1), mask.any(0)
    if not bool(rows.any()):
        return torch.zeros(4)
    r, c = torch.nonzero(rows).flatten(), torch.nonzero(cols).flatten()
    return torch.stack([c[0], r[0], c[-1] + 1, r[-1] + 1]).float()
