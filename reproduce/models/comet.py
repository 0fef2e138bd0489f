"""COMET (Zhang, Lee & Wang, ECCV 2024): an inherently explainable selector-predictor-detector model.

Pure torch (no Lightning): the three players, the objective in the paper's and in the released
code's form, building the players from configs/checkpoints, and rebuilding a trained model.

Players:

- **selector** ``S``: image -> one logit per pixel at input resolution; the mask is ``sigmoid`` of
  it, a soft mask in [0, 1] (no binarisation, no Gumbel: the code's ``gumbel=False`` path).
  ``lraspp_mobilenet_v3_large`` is the paper's (torchvision LR-ASPP); ``unet_small`` is a light
  U-Net for the 64x64 embedded benchmark.
- **predictor** ``f_P``: a classifier of the kept region ``x_s = S(x) * x + (1 - S(x)) * q``.
- **detector** ``f_D``: a classifier of the removed region ``x_{1-s} = (1 - S(x)) * x + S(x) * q``;
  pre-trained on full images and frozen (COMET), trained jointly to classify ``x_{1-s}`` (the
  "3p" adversarial ablation) or absent (the two-player selector-predictor ablation).

``q`` (the fill) is one colour per channel in the model's normalised input space, stored as a
buffer so it travels with the weights. Images are in the predictor's normalised space throughout;
if the detector was trained with other mean/std, its input is converted (same pixels, its space).

Objective (per batch; ``ce_p``/``ce_d`` are per-sample cross-entropies of the predictor on
``x_s`` and of the detector on ``x_{1-s}`` against the true label, ``area_b = mean_{h,w} S_b``):

- ``paper_linear``: ``m_p * mean(ce_p) - a * mean(ce_d) + b * R``;
- ``code_hinge`` (``train.py`` of the release, the default): ``m_p * mean(ce_p)
  + a * max(mean(ce_p) - mean(ce_d) + gap, 0) + b * R`` with the hinge on the batch means, as the
  code does; ``per_sample_hinge=True`` takes ``mean_b max(ce_p_b - ce_d_b + gap, 0)`` instead;
- ``R = mean_b max(area_b - tau, 0)``: the code's thresholded L1 area (only masks larger than
  ``tau`` pay). The paper does not spell out R; the same R is used for both forms.

Without a detector the detector term is zero (two-player objective). Gradient routing (code):
the predictor learns from ``m_p * mean(ce_p)`` only, a trainable detector from ``mean(ce_d)``
only, the selector from the total; a frozen detector receives nothing (see
:func:`player_losses`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.errors import ConfigError, InputError
from reproduce.models.checkpoint import load_model, read_checkpoint, state_dict_of
from reproduce.models.data_config import DataConfig, data_config_of
from reproduce.models.factory import create_model

OBJECTIVES = ("code_hinge", "paper_linear")
DETECTOR_MODES = ("frozen", "adversarial", "none")
FILL_NAMES = ("dataset_mean", "zero", "black")


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
        predictor = _model_from_spec(spec["predictor"])
        detector = _model_from_spec(spec["detector"]) if spec.get("detector") else None
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


def _model_from_spec(spec: dict[str, Any]) -> nn.Module:
    return create_model(
        spec["name"], num_classes=spec.get("num_classes"), img_size=spec.get("img_size"),
        in_chans=spec.get("in_chans", 3), **spec.get("kwargs", {}),
    )


# ---- objective ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    """COMET's objective knobs (defaults: the released code's ``conf/COMET.yaml``).

    ``a`` = ``m_closs`` (detector weight), ``gap`` = ``gap_th`` (hinge margin, nats), ``b`` =
    ``m_m1`` (area weight), ``tau`` = ``mask_th`` (area above which the mask pays), ``m_p`` =
    ``m_ploss``.
    """

    form: str = "code_hinge"
    m_p: float = 1.0
    a: float = 4.0
    gap: float = 2.0
    b: float = 100.0
    tau: float = 0.6
    per_sample_hinge: bool = False

    def __post_init__(self):
        if self.form not in OBJECTIVES:
            raise ConfigError(f"objective.form={self.form!r} is unknown; use one of {OBJECTIVES}.")
        for name in ("m_p", "a", "gap", "b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"objective.{name} must be a finite number >= 0, got {value!r}.")
        tau = self.tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau < 1:
            raise ConfigError(
                f"objective.tau (the area target: masks larger than this fraction of the image pay the area "
                f"penalty) must lie in (0, 1), got {tau!r}; the code uses 0.6."
            )
        if not isinstance(self.per_sample_hinge, bool):
            raise ConfigError(f"objective.per_sample_hinge must be true or false, got {self.per_sample_hinge!r}.")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | None) -> "Objective":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"objective has no option(s) {unknown}; it accepts {sorted(known)}.")
        return cls(**cfg)


@dataclass
class CometLoss:
    """Everything one objective evaluation produces (scalars unless noted)."""

    total: torch.Tensor  # what the selector minimises
    predictor: torch.Tensor  # m_p * mean(ce_p): what the predictor minimises
    ce_p: torch.Tensor  # mean predictor CE on x_s
    ce_d: torch.Tensor | None  # mean detector CE on x_{1-s}
    detector_term: torch.Tensor  # the term of the total that involves the detector
    area_term: torch.Tensor  # b * R
    area: torch.Tensor  # mean mask area over the batch
    hinge_active: torch.Tensor  # fraction of hinges that are active (1/0 for the batch-mean hinge)


def area_penalty(area: torch.Tensor, tau: float) -> torch.Tensor:
    """``R = mean_b max(area_b - tau, 0)`` for per-image areas ``[B]``."""
    return F.relu(area - tau).mean()


def paper_linear_objective(ce_p: torch.Tensor, ce_d: torch.Tensor | None, area: torch.Tensor, objective: Objective) -> CometLoss:
    """``m_p * mean(ce_p) - a * mean(ce_d) + b * R`` from per-sample ``ce_p``, ``ce_d``, ``area`` [B].

    Unbounded below in ``ce_d``: the selector is rewarded for any increase of the detector's loss,
    which is why the released code uses the hinge of :func:`code_hinge_objective`.
    """
    predictor = objective.m_p * ce_p.mean()
    zero = ce_p.new_zeros(())
    detector_term = -objective.a * ce_d.mean() if ce_d is not None else zero
    area_term = objective.b * area_penalty(area, objective.tau)
    active = ce_p.new_ones(()) if ce_d is not None else zero
    return CometLoss(predictor + detector_term + area_term, predictor, ce_p.mean(),
                     ce_d.mean() if ce_d is not None else None, detector_term, area_term, area.mean(), active)


def code_hinge_objective(ce_p: torch.Tensor, ce_d: torch.Tensor | None, area: torch.Tensor, objective: Objective) -> CometLoss:
    """``m_p * mean(ce_p) + a * max(mean(ce_p) - mean(ce_d) + gap, 0) + b * R`` (the release), or with
    ``per_sample_hinge`` ``a * mean_b max(ce_p_b - ce_d_b + gap, 0)``."""
    predictor = objective.m_p * ce_p.mean()
    zero = ce_p.new_zeros(())
    if ce_d is None:
        detector_term, active = zero, zero
    else:
        margin = (ce_p - ce_d + objective.gap) if objective.per_sample_hinge else (ce_p.mean() - ce_d.mean() + objective.gap)
        detector_term = objective.a * F.relu(margin).mean()
        active = (margin > 0).float().mean()
    area_term = objective.b * area_penalty(area, objective.tau)
    return CometLoss(predictor + detector_term + area_term, predictor, ce_p.mean(),
                     ce_d.mean() if ce_d is not None else None, detector_term, area_term, area.mean(), active)


def comet_objective(outputs: PlayerOutputs, labels: torch.Tensor, objective: Objective) -> CometLoss:
    ce_p = F.cross_entropy(outputs.predictor_logits, labels, reduction="none")
    ce_d = None
    if outputs.detector_logits is not None:
        ce_d = F.cross_entropy(outputs.detector_logits, labels, reduction="none")
    area = outputs.mask.flatten(1).mean(1)
    form = code_hinge_objective if objective.form == "code_hinge" else paper_linear_objective
    return form(ce_p, ce_d, area, objective)


def player_losses(loss: CometLoss, model: Comet) -> list[tuple[str, torch.Tensor]]:
    """(player, loss) for every player with trainable parameters, in backward order.

    The code's routing: each loss is back-propagated into that player's parameters only
    (``backward(inputs=...)``), so the predictor never sees the detector or area terms and a frozen
    detector nothing. A trainable (adversarial) detector minimises its own CE on ``x_{1-s}``.
    """
    out = []
    if model.parameters_of("predictor"):
        out.append(("predictor", loss.predictor))
    if model.detector is not None and model.parameters_of("detector"):
        out.append(("detector", loss.ce_d))
    out.append(("selector", loss.total))
    return out


def route_gradients(loss: CometLoss, model: Comet, backward: Callable[..., None] | None = None) -> None:
    """Back-propagate each player's loss into that player's parameters only (gradients accumulate
    into ``.grad``; zero them first). ``backward(loss, inputs=..., retain_graph=...)`` defaults to
    ``Tensor.backward``; the LightningModule passes ``manual_backward``."""
    backward = backward or (lambda t, **kw: t.backward(**kw))
    routed = player_losses(loss, model)
    for i, (player, player_loss) in enumerate(routed):
        backward(player_loss, inputs=model.parameters_of(player), retain_graph=i < len(routed) - 1)


# ---- building players from configs and checkpoints ---------------------------------------------
def _check_against(model: nn.Module, expected: dict[str, Any] | None, what: str, path: str, fix: str) -> None:
    """Compare a loaded model's spec with the expected ``name``/``num_classes``/``img_size``."""
    have = getattr(model, "reproduce_spec", {}) or {}
    for key in ("name", "num_classes", "img_size"):
        want = (expected or {}).get(key)
        if want is not None and have.get(key) is not None and have[key] != want:
            raise ConfigError(
                f"The {what} checkpoint {path!r} holds a {key}={have[key]!r} model but {key}={want!r} is "
                f"expected. {fix}"
            )


def load_player(
    checkpoint: str | os.PathLike | None, expected: dict[str, Any] | None, what: str, train_command: str | None
) -> nn.Module:
    """A classifier checkpoint of ``python -m reproduce.train`` as the ``what`` player, checked
    against ``expected`` (the model config COMET is run with)."""
    command = train_command or "python -m reproduce.train experiment=detector_<dataset>"
    fix = (f"Train it with `{command}` and pass its checkpoints/best.ckpt as module.{what}.checkpoint=..., "
           f"or set module.{what}.model to the checkpoint's architecture.")
    if checkpoint is None or str(checkpoint) == "":
        raise ConfigError(f"module.{what}.checkpoint is not set. COMET's {what} is a classifier pre-trained on full images: "
                          f"train it with `{command}` and pass its checkpoints/best.ckpt.")
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise ConfigError(f"The {what} checkpoint {path!r} does not exist. Train it with `{command}` "
                          f"(it writes outputs/train/<name>/checkpoints/best.ckpt) or fix module.{what}.checkpoint.")
    try:
        model = load_model(path)
    except ConfigError as err:
        raise ConfigError(f"The {what} checkpoint {path!r} cannot serve as COMET's {what}: {err} {fix}") from err
    _check_against(model, expected, what, path, fix)
    return model


def build_comet(
    selector: dict[str, Any],
    predictor: dict[str, Any],
    detector: dict[str, Any] | None,
    detector_bn_train: bool = False,
) -> Comet:
    """The three players from configs (the LightningModule's ``selector``/``predictor``/``detector``).

    predictor: ``{model: create_model kwargs, checkpoint: path | None, trainable: bool}``; a frozen
    predictor (the post-hoc "1p" ablation) must come from a checkpoint.
    detector: ``{mode: frozen | adversarial | none, checkpoint, model, train_command}``; ``frozen``
    loads ``checkpoint`` (checked against ``model``), ``adversarial`` builds ``model`` (from
    ``checkpoint`` when given) and trains it, ``none`` drops it.
    """
    predictor = dict(predictor or {})
    unknown = sorted(set(predictor) - {"model", "checkpoint", "trainable", "optimizer", "train_command"})
    if unknown:
        raise ConfigError(f"module.predictor has no option(s) {unknown}.")
    trainable = predictor.get("trainable", True)
    if predictor.get("checkpoint"):
        pred = load_player(predictor["checkpoint"], predictor.get("model"), "predictor", predictor.get("train_command"))
    elif not trainable:
        raise ConfigError("module.predictor.trainable=false (post-hoc selector) needs module.predictor.checkpoint: "
                          "the fixed classifier the selector explains.")
    elif not predictor.get("model"):
        raise ConfigError("module.predictor.model must give the predictor's create_model arguments (name, num_classes, img_size).")
    else:
        pred = create_model(**predictor["model"])

    detector = dict(detector or {"mode": "none"})
    unknown = sorted(set(detector) - {"mode", "checkpoint", "model", "train_command", "optimizer"})
    if unknown:
        raise ConfigError(f"module.detector has no option(s) {unknown}.")
    mode = detector.get("mode", "frozen")
    if mode not in DETECTOR_MODES:
        raise ConfigError(f"module.detector.mode={mode!r} is unknown; use one of {DETECTOR_MODES}.")
    expected = {**(detector.get("model") or {}), "num_classes": int(pred.num_classes)}
    det = None
    if mode == "frozen":
        det = load_player(detector.get("checkpoint"), expected, "detector", detector.get("train_command"))
    elif mode == "adversarial":
        if detector.get("checkpoint"):
            det = load_player(detector["checkpoint"], expected, "detector", detector.get("train_command"))
        elif detector.get("model"):
            det = create_model(**{**detector["model"], "num_classes": int(pred.num_classes)})
        else:
            raise ConfigError("module.detector.mode=adversarial needs module.detector.model (or a checkpoint to start from).")
    if det is not None:
        ours, theirs = data_config_of(pred).input_size, data_config_of(det).input_size
        if ours != theirs:
            raise ConfigError(f"The detector takes inputs {theirs} but the predictor {ours}; train the detector "
                              "at the image size COMET runs at.")
    selector = {k: v for k, v in (selector or {}).items() if k != "optimizer"}  # optimizer: the module's
    if "name" not in selector:
        raise ConfigError(f"module.selector needs a name, one of {sorted(SELECTORS)}.")
    return Comet(
        create_selector(**selector), pred, det,
        predictor_frozen=not trainable, detector_frozen=mode == "frozen", detector_bn_train=bool(detector_bn_train),
    )


def mean_colour(batches: Iterable[torch.Tensor], max_images: int) -> torch.Tensor:
    """Per-channel mean ``[C]`` over the first ``max_images`` images of ``[B, C, H, W]`` batches (in
    whatever space the batches are in; float64 accumulation)."""
    total, count = None, 0
    for images in batches:
        images = images[: max_images - count].double()
        part = images.sum((0, 2, 3))
        total = part if total is None else total + part
        count += images.shape[0]
        pixels = images.shape[-1] * images.shape[-2]
        if count >= max_images:
            break
    if total is None or count == 0:
        raise ConfigError("mask_fill=dataset_mean needs training images, but the training split is empty.")
    return (total / (count * pixels)).float()


def fill_value(spec: str | float | list[float], data_config: DataConfig) -> torch.Tensor | None:
    """The fill ``q`` ``[C]`` in normalised space for a config value; ``None`` for ``dataset_mean``
    (computed from the training data by the caller).

    ``zero`` = 0 in normalised space (the mean colour of the model's data config), ``black`` =
    a black pixel, a number or a list of C numbers = that value in normalised space (as
    :class:`reproduce.models.FillMasker`).
    """
    c = data_config.input_size[0]
    if spec == "dataset_mean":
        return None
    if spec == "zero":
        return torch.zeros(c)
    if spec == "black":
        return data_config.value_of(0.0, torch.zeros(1)).reshape(c)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full((c,), float(spec))
    if isinstance(spec, (list, tuple)) and len(spec) == c and all(isinstance(v, (int, float)) for v in spec):
        return torch.tensor([float(v) for v in spec])
    raise ConfigError(f"mask_fill={spec!r} is not understood; use one of {FILL_NAMES}, a number or a list of "
                      f"{c} numbers (normalised space).")


def load_comet(path: str | os.PathLike) -> Comet:
    """A trained COMET model (all three players and the fill) from a checkpoint of
    ``python -m reproduce.train experiment=comet_*``; needs neither the detector checkpoint nor
    the selector's pretrained backbone. Returned in eval mode."""
    ckpt = read_checkpoint(path)
    spec = ckpt.get("comet_spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"{os.fspath(path)!r} is not a COMET checkpoint (no comet_spec); train one with "
                          "`python -m reproduce.train experiment=comet_synthetic`.")
    model = Comet.from_spec(spec)
    sd = state_dict_of(ckpt, prefix="comet.")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{os.fspath(path)!r} does not match its comet_spec ({len(missing)} missing, "
                          f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:2]}); the file is damaged.")
    return model.eval()
