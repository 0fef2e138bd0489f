"""Evidential deep learning (Sensoy, Kaplan & Kandemir, NeurIPS 2018): losses and uncertainty.

In the base layer because both the trainer (:mod:`reproduce.lit.evidential`) and SMDL's confidence
score (:mod:`reproduce.attributors.smdl`) use it.

A classifier's K outputs z become non-negative *evidence* e = g(z); the Dirichlet parameters are
alpha = e + 1, the total strength S = sum_c alpha_c, and the uncertainty u = K / S in (0, 1]
(u = 1 when there is no evidence at all). SMDL's confidence score is 1 - u, with
g(z) = exp(clamp(scale * z, -10, 10)) (scale 5 for its face models, 1 for CUB).

Losses (per sample, averaged over the batch), with y the one-hot label and p = alpha / S:

- ``edl_mse_loss``: sum_c (y_c - p_c)^2 + p_c (1 - p_c) / (S + 1)     (Sensoy Eq. 5)
- ``edl_log_loss``: sum_c y_c (log S - log alpha_c)                    (Eq. 3)
- ``edl_digamma_loss``: sum_c y_c (digamma S - digamma alpha_c)        (Eq. 4)

each plus ``min(1, epoch / annealing_step) * KL(Dir(alpha~) || Dir(1))`` where alpha~ = y + (1 - y)
alpha removes the evidence of the true class (Eq. 6-7). SMDL's copy of these losses has the KL term
commented out; ``kl_term=False`` reproduces that.

The evidence function defaults to ``exp`` (clamped) for training as well as for the uncertainty,
so a model trained here is read the way SMDL reads its EDL model; Sensoy's reference code trains
with ``relu`` (available as ``evidence="relu"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reproduce.checks import choice_error
from reproduce.errors import InputError

EVIDENCE = ("exp", "relu", "softplus")


def evidence_from_logits(logits: torch.Tensor, evidence: str = "exp", scale: float = 1.0) -> torch.Tensor:
    """Non-negative evidence ``[..., K]``: exp(clamp(scale z, -10, 10)), relu(scale z) or softplus."""
    z = logits * scale
    if evidence == "exp":
        return torch.exp(torch.clamp(z, -10.0, 10.0))
    if evidence == "relu":
        return F.relu(z)
    if evidence == "softplus":
        return F.softplus(z)
    raise choice_error("evidence", evidence, EVIDENCE, error=InputError)


def evidential_uncertainty(logits: torch.Tensor, scale: float = 1.0, evidence: str = "exp") -> torch.Tensor:
    """u = K / sum_c (e_c + 1) over the last dimension (SMDL: confidence = 1 - u)."""
    alpha = evidence_from_logits(logits, evidence, scale) + 1.0
    return logits.shape[-1] / alpha.sum(-1)


def kl_to_uniform_dirichlet(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1, ..., 1)) per row of ``alpha [N, K]``."""
    k = alpha.shape[-1]
    strength = alpha.sum(-1, keepdim=True)
    log_norm = torch.lgamma(strength).squeeze(-1) - torch.lgamma(alpha).sum(-1) - torch.lgamma(alpha.new_tensor(float(k)))
    digamma_term = ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(strength))).sum(-1)
    return log_norm + digamma_term


def _prepare(logits: torch.Tensor, labels: torch.Tensor, evidence: str) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.dim() != 2:
        raise InputError(f"logits must be [N, K], got shape {tuple(logits.shape)}.")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0] or labels.is_floating_point():
        raise InputError(f"labels must be [N] class indices for {logits.shape[0]} logits, got {tuple(labels.shape)} {labels.dtype}.")
    y = F.one_hot(labels.long(), logits.shape[-1]).to(logits.dtype)
    return y, evidence_from_logits(logits, evidence) + 1.0


def annealing_coefficient(epoch: int | float, annealing_step: int | float) -> float:
    """min(1, epoch / annealing_step): the weight of the KL term (0 in the first epoch)."""
    if annealing_step <= 0:
        raise InputError(f"annealing_step must be positive, got {annealing_step!r}.")
    return min(1.0, float(epoch) / float(annealing_step))


def _with_kl(data_term: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, epoch, annealing_step, kl_term: bool) -> torch.Tensor:
    if not kl_term:
        return data_term.mean()
    alpha_tilde = y + (1 - y) * alpha
    return (data_term + annealing_coefficient(epoch, annealing_step) * kl_to_uniform_dirichlet(alpha_tilde)).mean()


def edl_mse_loss(logits, labels, epoch: int | float, annealing_step: int | float = 10, evidence: str = "exp", kl_term: bool = True):
    """Expected squared error under Dir(alpha) (+ annealed KL): Sensoy Eq. 5."""
    y, alpha = _prepare(logits, labels, evidence)
    strength = alpha.sum(-1, keepdim=True)
    p = alpha / strength
    data = ((y - p) ** 2 + p * (1 - p) / (strength + 1)).sum(-1)
    return _with_kl(data, y, alpha, epoch, annealing_step, kl_term)


def edl_log_loss(logits, labels, epoch: int | float, annealing_step: int | float = 10, evidence: str = "exp", kl_term: bool = True):
    """Negative log of the expected likelihood (type II ML) (+ annealed KL): Sensoy Eq. 3."""
    y, alpha = _prepare(logits, labels, evidence)
    data = (y * (torch.log(alpha.sum(-1, keepdim=True)) - torch.log(alpha))).sum(-1)
    return _with_kl(data, y, alpha, epoch, annealing_step, kl_term)


def edl_digamma_loss(logits, labels, epoch: int | float, annealing_step: int | float = 10, evidence: str = "exp", kl_term: bool = True):
    """Expected cross-entropy under Dir(alpha) (+ annealed KL): Sensoy Eq. 4."""
    y, alpha = _prepare(logits, labels, evidence)
    data = (y * (torch.digamma(alpha.sum(-1, keepdim=True)) - torch.digamma(alpha))).sum(-1)
    return _with_kl(data, y, alpha, epoch, annealing_step, kl_term)


EDL_LOSSES = {"mse": edl_mse_loss, "log": edl_log_loss, "digamma": edl_digamma_loss}
