"""Building COMET's players from configs and checkpoints, its fill ``q``, and rebuilding a trained
model from a checkpoint of ``python -m reproduce.train experiment=comet_*``."""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch
from torch import nn

from reproduce.errors import ConfigError
from reproduce.models.checkpoint import read_checkpoint, state_dict_of
from reproduce.models.comet.networks import SELECTORS, Comet, create_selector
from reproduce.models.data_config import DataConfig, data_config_of
from reproduce.models.factory import create_model, load_model

DETECTOR_MODES = ("frozen", "adversarial", "none")
FILL_NAMES = ("dataset_mean", "zero", "black")


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


def load_comet(path: str | os.PathLike, contents: dict[str, Any] | None = None) -> Comet:
    """A trained COMET model (all three players and the fill) from a checkpoint of
    ``python -m reproduce.train experiment=comet_*``; needs neither the detector checkpoint nor
    the selector's pretrained backbone. Returned in eval mode. ``contents``: the checkpoint already
    read by :func:`read_checkpoint` (the file is then not read again)."""
    ckpt = read_checkpoint(path) if contents is None else contents
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
