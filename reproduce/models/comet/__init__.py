"""COMET (Zhang, Lee & Wang, ECCV 2024): an inherently explainable selector-predictor-detector model.

Pure torch (no Lightning), in three modules: ``networks`` (the three players and the model),
``objective`` (the paper's and the released code's objective, gradient routing) and ``building``
(the players from configs and checkpoints, the fill, rebuilding a trained model).

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

from reproduce.models.comet.building import (
    DETECTOR_MODES,
    FILL_NAMES,
    build_comet,
    fill_value,
    load_comet,
    load_player,
    mean_colour,
)
from reproduce.models.comet.networks import SELECTORS, Comet, LRASPPSelector, PlayerOutputs, SmallUNet, create_selector
from reproduce.models.comet.objective import (
    OBJECTIVES,
    CometLoss,
    Objective,
    area_penalty,
    code_hinge_objective,
    comet_objective,
    paper_linear_objective,
    player_losses,
    route_gradients,
)

__all__ = [
    "DETECTOR_MODES", "FILL_NAMES", "OBJECTIVES", "SELECTORS", "Comet", "CometLoss", "LRASPPSelector", "Objective",
    "PlayerOutputs", "SmallUNet", "area_penalty", "build_comet", "code_hinge_objective", "comet_objective",
    "create_selector", "fill_value", "load_comet", "load_player", "mean_colour", "paper_linear_objective",
    "player_losses", "route_gradients",
]
