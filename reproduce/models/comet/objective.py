"""COMET's objective in the paper's and in the released code's form, and the code's gradient
routing between the players (see the package docstring for the formulas)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import torch
import torch.nn.functional as F

from reproduce.errors import ConfigError
from reproduce.models.comet.networks import Comet, PlayerOutputs

OBJECTIVES = ("code_hinge", "paper_linear")


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
