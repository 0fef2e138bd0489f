"""Seeded, documented layer randomisation of a copy of a model (the MPRT of Adebayo et al.).

**Layers.** A *layer* is a module that owns parameters directly (``module.parameters(recurse=False)``
is non-empty): convolutions, linear maps, normalisation layers, and, for a timm ViT, the model
itself (class token and position embedding). They are listed in ``named_modules()`` order, which
for timm models is input to output; "top" is the last one (closest to the output). ``layers=``
may instead name modules of any granularity (blocks such as ``layer4`` or ``blocks.3``): a named
block randomises every parameterised module inside it at once. Steps run top-down.

**Randomising a layer** re-draws its own parameters, seeded, independently of the device:

- a module with ``reset_parameters()`` (Conv, Linear, norm layers, ...) gets its default
  initialisation, drawn on a CPU copy of the module under ``torch.manual_seed(layer_seed)`` (what
  Quantus' MPRT calls, but with one seed per layer) and copied back;
- any other parameter (ViT tokens, layer-scale gammas) is redrawn from ``N(0, 0.02^2)``, timm's
  initialisation of the ViT tokens;
- ``layer_seed`` mixes ``seed`` with the layer's position in the module tree, so a layer draws the
  same weights whichever other layers are selected.

**BatchNorm** (quanda PR#252: randomising every tensor of a BatchNorm, running statistics included,
gives NaNs). ``batchnorm="keep_statistics"`` (default) re-initialises the affine weight and bias
(``reset_parameters``: 1 and 0) and keeps the trained running mean and variance, which are buffers,
not parameters: activations keep a valid normalisation, so no NaN can appear. ``"reset_statistics"``
also resets the running statistics to mean 0 and variance 1 (Quantus' behaviour). Either way the
running variance stays positive.

The original model is never modified: randomisation happens on a deep copy, and
:meth:`LayerRandomiser.restore` reloads the copy from the original's state dict.
"""

from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
from torch import nn

from reproduce.checks import check_choice, suggest
from reproduce.errors import ConfigError

BATCHNORM_RULES = ("keep_statistics", "reset_statistics")
MODES = ("cascading", "independent")
TOKEN_STD = 0.02
ROOT = "<model>"  # name shown for parameters owned by the model itself


def parameterised_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module owning parameters directly, input to output."""
    return [(name or ROOT, m) for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]


def layer_seed(seed: int, position: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(position)]).generate_state(1)[0])


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._NormBase)


def randomise_module(module: nn.Module, seed: int, batchnorm: str = "keep_statistics") -> None:
    """Re-draw the parameters ``module`` owns directly (see the module docstring), in place."""
    with torch.no_grad():
        if hasattr(module, "reset_parameters"):
            fresh = copy.deepcopy(module).cpu()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh.reset_parameters()
            for name, p in module.named_parameters(recurse=False):
                p.copy_(getattr(fresh, name))
            if _is_batchnorm(module) and batchnorm == "reset_statistics":
                for name, b in module.named_buffers(recurse=False):
                    b.copy_(getattr(fresh, name))
            return
        g = torch.Generator().manual_seed(seed)
        for p in module.parameters(recurse=False):
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).mul_(TOKEN_STD).to(p))


class LayerRandomiser:
    """The layers of ``model`` to randomise, top-down, and a copy to randomise them on.

    Args:
        model: the trained model (never modified).
        layers: module names (any granularity) or ``None`` for every parameterised module.
        seed, batchnorm: see the module docstring.
    """

    def __init__(self, model: nn.Module, layers: list[str] | tuple[str, ...] | None = None, seed: int = 0,
                 batchnorm: str = "keep_statistics"):
        self.model = model
        self.seed = int(seed)
        self.batchnorm = check_choice("batchnorm", batchnorm, BATCHNORM_RULES)
        leaves = parameterised_modules(model)
        if not leaves:
            raise ConfigError(
                f"{type(model).__name__} has no parameters to randomise; the model-parameter randomisation "
                "test needs a model with weights."
            )
        self._position = {id(m): i for i, (_, m) in enumerate(leaves)}
        self.steps = self._steps(leaves, layers)  # [(step name, [leaf names])], top-down
        self._copy: nn.Module | None = None

    def _steps(self, leaves: list[tuple[str, nn.Module]], layers) -> list[tuple[str, list[str]]]:
        if layers is None:
            return [(name, [name]) for name, _ in reversed(leaves)]
        if isinstance(layers, str) or not layers:
            raise ConfigError(f"layers must be a non-empty list of module names or null, got {layers!r}.")
        modules = dict(self.model.named_modules())
        order = {name: i for i, name in enumerate(modules)}
        leaf_names = [leaf for leaf, _ in leaves]
        steps = []
        for name in layers:
            if name != ROOT and name not in modules:
                raise ConfigError(
                    f"layers names {name!r}, which is not a module of {type(self.model).__name__}.{suggest(name, modules)} "
                    "Names come from model.named_modules()."
                )
            inside = [leaf for leaf in leaf_names if leaf == name or (name not in ("", ROOT) and leaf.startswith(f"{name}."))]
            if not inside:
                raise ConfigError(f"layers names {name!r}, which holds no parameters of its own or below it to randomise.")
            steps.append((name, inside))
        steps.sort(key=lambda s: -order["" if s[0] == ROOT else s[0]])
        return steps

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.steps]

    def copy(self) -> nn.Module:
        """The randomisation copy (built once, on the model's device), reset to the trained weights."""
        if self._copy is None:
            self._copy = copy.deepcopy(self.model)
        else:
            self._copy.load_state_dict(self.model.state_dict())
        return self._copy

    def randomise_step(self, target: nn.Module, step: int) -> None:
        modules = dict(target.named_modules())
        modules[ROOT] = target
        originals = dict(self.model.named_modules())
        originals[ROOT] = self.model
        for leaf in self.steps[step][1]:
            position = self._position[id(originals[leaf])]
            randomise_module(modules[leaf], layer_seed(self.seed, position), self.batchnorm)

    def models(self, mode: str) -> Iterator[tuple[int, nn.Module]]:
        """``(step, randomised copy)`` for each step: cascading = steps 0..s randomised together,
        independent = only step s. The same copy object is yielded each time (modified in place)."""
        check_choice("mode", mode, MODES)
        target = self.copy()
        for step in range(len(self.steps)):
            if mode == "independent" and step > 0:
                target.load_state_dict(self.model.state_dict())
            self.randomise_step(target, step)
            yield step, target

    def fully_randomised(self) -> nn.Module:
        """The copy with every step randomised (the end of the cascade)."""
        target = self.copy()
        for step in range(len(self.steps)):
            self.randomise_step(target, step)
        return target
