"""COMET's players: the selectors (a light U-Net, the paper's LR-ASPP), and :class:`Comet`, the
selector-predictor-detector model whose ``forward`` is the explainable classifier (see the package
docstring for the roles and the fill ``q``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.errors import ConfigError, InputError
from reproduce.models.data_config import DataConfig, data_config_of
from reproduce.models.factory import model_from_spec


# ---- selectors ---------------------------------------------------------------------------------
class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class SmallUNet(nn.Module):
    """A light U-Net: a ``stride`` stem, ``depth`` poolings, ``width * 2**i`` channels at level ``i``;
    returns one logit per input pixel ``[B, H, W]`` (the stem-resolution logits upsampled
    bilinearly, as LR-ASPP does from stride 8; any input size: skips are matched by interpolation).

    ``stride=2`` halves the cost of every level; at 64x64 the mask is then decided on a 32x32 grid,
    fine enough for the benchmark's objects (>= 12 px across).
    """

    def __init__(self, in_chans: int = 3, width: int = 16, depth: int = 3, stride: int = 2):
        super().__init__()
        for name, value in (("width", width), ("depth", depth), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"unet_small needs an integer {name} >= 1, got {value!r}.")
        chans = [width * 2**i for i in range(depth + 1)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, chans[0], 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)
        )
        self.down = nn.ModuleList([_ConvBlock(chans[0], chans[0])] + [_ConvBlock(chans[i - 1], chans[i]) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([_ConvBlock(chans[i] + chans[i - 1], chans[i - 1]) for i in range(depth, 0, -1)])
        self.head = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        logits = self.head(x)
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.squeeze(1)


class LRASPPSelector(nn.Module):
    """torchvision LR-ASPP MobileNetV3-Large with one output channel (COMET's selector).

    ``pretrained_backbone=True`` loads torchvision's ImageNet-1k MobileNetV3-Large backbone (what
    the released code gets implicitly: torchvision's default ``weights_backbone``). It needs the
    torchvision hub (download or ``$TORCH_HOME/hub/checkpoints``); the default here is a random
    backbone because this package never downloads at run time.
    """

    def __init__(self, pretrained_backbone: bool = False):
        super().__init__()
        from torchvision.models import MobileNet_V3_Large_Weights
        from torchvision.models.segmentation import lraspp_mobilenet_v3_large

        weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained_backbone else None
        try:
            self.net = lraspp_mobilenet_v3_large(num_classes=1, weights=None, weights_backbone=weights)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            raise ConfigError(
                f"selector.pretrained_backbone=true needs torchvision's ImageNet MobileNetV3-Large weights, "
                f"which could not be loaded ({type(err).__name__}: {err}). Put "
                f"{weights.url.rsplit('/', 1)[-1]} into $TORCH_HOME/hub/checkpoints (or allow the download), "
                "or set selector.pretrained_backbone=false."
            ) from err

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"].squeeze(1)


SELECTORS: dict[str, type[nn.Module]] = {"unet_small": SmallUNet, "lraspp_mobilenet_v3_large": LRASPPSelector}


def create_selector(name: str, **options: Any) -> nn.Module:
    """A selector by name (``unet_small`` or ``lraspp_mobilenet_v3_large``); it carries ``spec``,
    the arguments it was built with."""
    if name not in SELECTORS:
        raise ConfigError(f"Unknown selector {name!r}; use one of {sorted(SELECTORS)}.")
    try:
        selector = SELECTORS[name](**options)
    except TypeError as err:
        raise ConfigError(f"Selector {name!r} does not accept {sorted(options)}: {err}.") from err
    selector.spec = {"name": name, **options}
    return selector


# ---- the three-player model --------------------------------------------------------------------
@dataclass
class PlayerOutputs:
    mask: torch.Tensor  # [B, H, W] in [0, 1]
    predictor_logits: torch.Tensor  # [B, K] on x_s
    detector_logits: torch.Tensor | None  # [B, K] on x_{1-s}; None without a detector


class Comet(nn.Module):
    """Selector, predictor and (optional) detector. ``forward(x)`` is the explainable classifier:
    the predictor's logits on the kept region. ``mask(x)`` is the explanation ``[B, H, W]``.

    ``predictor_frozen`` / ``detector_frozen`` / ``detector_bn_train`` decide which players stay in
    eval mode under ``.train()``: a frozen player keeps its BatchNorm statistics unless
    ``detector_bn_train`` (the released code trains them, as its detector sits in a ``.train()``
    module).
    """

    def __init__(
        self,
        selector: nn.Module,
        predictor: nn.Module,
        detector: nn.Module | None = None,
        fill: torch.Tensor | None = None,
        predictor_frozen: bool = False,
        detector_frozen: bool = True,
        detector_bn_train: bool = False,
    ):
        super().__init__()
        self.selector, self.predictor, self.detector = selector, predictor, detector
        self.num_classes = int(predictor.num_classes)
        if detector is not None and int(detector.num_classes) != self.num_classes:
            raise ConfigError(
                f"The detector has {detector.num_classes} classes but the predictor {self.num_classes}; "
                "train the detector on the same dataset."
            )
        # The explainable model takes what the predictor takes (ModelAdapter reads this).
        self.pretrained_cfg = dict(getattr(predictor, "pretrained_cfg", {}) or {})
        channels = data_config_of(predictor).input_size[0]
        self.register_buffer("fill", torch.zeros(channels) if fill is None else fill.detach().float().reshape(channels).clone())
        self.predictor_frozen, self.detector_frozen, self.detector_bn_train = predictor_frozen, detector_frozen, detector_bn_train
        for module, frozen in ((predictor, predictor_frozen), (detector, detector_frozen)):
            if module is not None and frozen:
                module.requires_grad_(False)
        self.train(self.training)

    # -- configuration ---------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """What :meth:`from_spec` needs to rebuild this model (weights excluded)."""
        return {
            "selector": dict(self.selector.spec),
            "predictor": dict(self.predictor.reproduce_spec),
            "detector": dict(self.detector.reproduce_spec) if self.detector is not None else None,
            "predictor_frozen": self.predictor_frozen,
            "detector_frozen": self.detector_frozen,
            "detector_bn_train": self.detector_bn_train,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "Comet":
        """An untrained model with the architecture of ``spec`` (load weights afterwards). A
        pretrained selector backbone is never fetched here: the weights come from the checkpoint."""
        selector_spec = {k: v for k, v in spec["selector"].items() if k != "pretrained_backbone"}
        predictor = model_from_spec(spec["predictor"])
        detector = model_from_spec(spec["detector"]) if spec.get("detector") else None
        flags = {k: bool(spec[k]) for k in ("predictor_frozen", "detector_frozen", "detector_bn_train") if k in spec}
        return cls(create_selector(**selector_spec), predictor, detector, **flags)

    def train(self, mode: bool = True) -> "Comet":
        super().train(mode)
        if self.predictor_frozen:
            self.predictor.eval()
        if self.detector is not None and self.detector_frozen and not self.detector_bn_train:
            self.detector.eval()
        return self

    @property
    def data_config(self) -> DataConfig:
        return data_config_of(self.predictor)

    # -- the players -----------------------------------------------------------------------------
    def mask_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.selector(x)
        if logits.shape != (x.shape[0], *x.shape[-2:]):
            raise InputError(
                f"The selector returned logits of shape {tuple(logits.shape)} for inputs {tuple(x.shape)}; "
                "a selector must return one logit per input pixel [B, H, W]."
            )
        return logits

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The explanation ``S(x)``: ``[B, H, W]`` in [0, 1], class-agnostic."""
        return torch.sigmoid(self.mask_logits(x))

    def keep(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x_s = S * x + (1 - S) * q``."""
        m = mask.unsqueeze(1)
        return m * x + (1 - m) * self.fill.view(1, -1, 1, 1)

    def remove(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x_{1-s} = (1 - S) * x + S * q``."""
        return self.keep(x, 1 - mask)

    def _detector_input(self, x: torch.Tensor) -> torch.Tensor:
        ours, theirs = self.data_config, data_config_of(self.detector)
        if ours.mean == theirs.mean and ours.std == theirs.std:
            return x
        return theirs.normalize(ours.denormalize(x))

    def players(self, x: torch.Tensor) -> PlayerOutputs:
        """One forward of every player on a batch in the predictor's normalised space."""
        mask = self.mask(x)
        logits_p = self.predictor(self.keep(x, mask))
        logits_d = None
        if self.detector is not None:
            logits_d = self.detector(self._detector_input(self.remove(x, mask)))
        return PlayerOutputs(mask, logits_p, logits_d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.keep(x, self.mask(x)))

    def parameters_of(self, player: str) -> list[nn.Parameter]:
        module = {"selector": self.selector, "predictor": self.predictor, "detector": self.detector}[player]
        return [] if module is None else [p for p in module.parameters() if p.requires_grad]

