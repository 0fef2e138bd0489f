"""SMDL's set objective F(S) = l1 s_conf + l2 s_eff + l3 s_cons + l4 s_colla: the score terms and the
networks that compute them (conventions in :mod:`reproduce.attributors.smdl`).

:class:`SMDLObjective` evaluates F on candidate sets, either for every image of the batch
(``sets[B, M, m]``, exhaustive greedy) or for chosen images (``sets[R, M, m]`` with ``images[R]``,
the lazy search, whose candidates differ per image). A term whose lambda is 0 costs no pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.attributors.games import SetGame
from reproduce.models import DataConfig, FillMasker, ModelAdapter, Partition, data_config_of, fill_tensor, record_forward
from reproduce.models.evidential import evidential_uncertainty

TERMS = ("confidence", "effectiveness", "consistency", "collaboration")


# --- pure score functions -----------------------------------------------------------------------
def embedding_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """``[B, m, m]`` distances arccos(cos) / pi in [0, 1] between region embeddings ``[B, m, D]``,
    with the diagonal set to 1 (the code's ``+ eye``: a region is never its own nearest neighbour)."""
    unit = F.normalize(embeddings.float(), dim=-1)
    dist = torch.arccos((unit @ unit.transpose(1, 2)).clamp(-1.0, 1.0)) / math.pi
    eye = torch.eye(dist.shape[-1], dtype=torch.bool, device=dist.device)
    return dist.masked_fill(eye, 1.0)


def effectiveness_scores(distances: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """s_eff(T) = sum_{a in T} min_{b in T} D[a, b] for ``sets [B, M, m]`` -> ``[B, M]``."""
    inside = sets[:, :, None, :]  # b in T
    masked = torch.where(inside, distances[:, None], torch.full_like(distances[:, None], math.inf))
    nearest = masked.min(-1).values  # [B, M, m]
    return torch.where(sets, nearest, torch.zeros_like(nearest)).sum(-1)


def class_scores(logits_or_features: torch.Tensor, target: torch.Tensor, head: str, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Consistency-style score of class ``target[b]`` from ``[B, M, K]`` logits (``class_prob``) or
    ``[B, M, D]`` pre-logit features (``cosine_to_class_weight``, with ``class_weight [K, D]``)."""
    b, m = logits_or_features.shape[:2]
    if head == "class_prob":
        probs = logits_or_features.softmax(-1)
        return probs.gather(-1, target.view(b, 1, 1).expand(b, m, 1)).squeeze(-1)
    w = class_weight[target].to(logits_or_features.dtype)  # [B, D]
    return F.cosine_similarity(logits_or_features, w[:, None, :], dim=-1)


def smdl_forward_passes(m: int, k: int, separate_confidence_model: bool = True, shared_embeddings: bool = True) -> int:
    """Forward passes of the exhaustive greedy search with every lambda non-zero (without the prior).

    ``shared_embeddings``: the region embeddings are the classifier's pre-logit features of each
    region alone, the very sets of step 0, so their m passes serve step 0's consistency as well.
    """
    per_candidate = 3 if separate_confidence_model else 2
    return per_candidate * k * (2 * m - k + 1) // 2 + (0 if shared_embeddings else m)


# --- networks -----------------------------------------------------------------------------------
class LogitsAndFeatures(nn.Module):
    """A timm classifier returning ``[logits | pre-logit features]`` in one pass (counted)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        features = m.forward_head(m.forward_features(x), pre_logits=True)
        record_forward(m, x.shape[0])
        return torch.cat([m.get_classifier()(features), features], dim=-1)


class CountedOn(nn.Module):
    """Another network (EDL or embedding model) whose passes count on the classifier's counter."""

    def __init__(self, net: nn.Module, counter_model: nn.Module):
        super().__init__()
        self.net = net
        self.counter_model = counter_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        record_forward(self.counter_model, x.shape[0])
        return out


def convert_space(t: torch.Tensor, source: DataConfig, dest: DataConfig) -> torch.Tensor:
    if source.mean == dest.mean and source.std == dest.std:
        return t
    return dest.normalize(source.denormalize(t))


def network_game(net: nn.Module, space_of: nn.Module, classifier: ModelAdapter, x: torch.Tensor, target: torch.Tensor,
                 partition: Partition, fill, max_batch: int) -> SetGame:
    """``net`` on ``x`` showing chosen regions, fed in the input space of ``space_of`` (the same
    pixels: image and fill converted from the classifier's normalisation), evaluated in chunks of
    ``max_batch`` rows. SMDL reads its logits (``SetGame.logits``), not a reward."""
    source, dest = classifier.data_config, data_config_of(space_of)
    fill = convert_space(fill_tensor(classifier, x, fill), source, dest)
    masker = FillMasker(net, fill=fill, max_batch=max_batch)
    return SetGame(net, convert_space(x, source, dest), target, partition, masker, max_rows=max_batch)


# --- the objective ------------------------------------------------------------------------------
class SMDLObjective:
    """F on candidate sets of one batch: ``objective(sets, images=None) -> {"total", <terms>}``.

    Built once per batch: the region embeddings (and their distances) are computed here, each
    region alone; when they are the classifier's own features the same logits serve step 0.
    """

    def __init__(self, smdl, x: torch.Tensor, target: torch.Tensor, partition: Partition):
        self.lambdas = smdl.lambdas
        self.scale = smdl.confidence_scale
        self.head = smdl.score_head
        self.target = target
        self.m = partition.num_players
        model, adapter = smdl.model, smdl.adapter
        l_conf, l_eff, l_cons, _ = self.lambdas
        self.use_features = self.head == "cosine_to_class_weight"
        wants_features = self.use_features or (l_eff and smdl.embedding_model is None)
        self.classifier = LogitsAndFeatures(model) if wants_features else model
        self.num_classes = adapter.num_classes
        self.weight = model.get_classifier().weight if self.use_features else None
        args = (adapter, x, target, partition, smdl.fill, smdl.max_batch)
        self.cls_game = network_game(self.classifier, model, *args)
        self.conf_game = None
        if l_conf and smdl.confidence_model is not None:
            self.conf_game = network_game(CountedOn(smdl.confidence_model, model), smdl.confidence_model, *args)
        self.shown_by_classifier = bool(l_cons or (l_conf and self.conf_game is None))
        self.step0 = None  # classifier outputs on each region alone, when step 0 can reuse them
        self.distances = None
        if l_eff:
            alone = torch.eye(self.m, dtype=torch.bool, device=x.device).expand(x.shape[0], self.m, self.m)
            if smdl.embedding_model is None:
                logits, embeddings = self._classify(alone, None)
                self.step0 = (logits, embeddings) if self.shown_by_classifier else None
            else:
                emb = network_game(CountedOn(smdl.embedding_model, model), smdl.embedding_model, *args)
                embeddings = emb.logits(alone).flatten(2)
            self.distances = embedding_distances(embeddings)

    def _classify(self, sets: torch.Tensor, images: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.cls_game.logits(sets) if images is None else self.cls_game.logits_on(images, sets)
        if not isinstance(self.classifier, LogitsAndFeatures):
            return out, None
        return out[..., : self.num_classes], out[..., self.num_classes :]

    def _head(self, logits: torch.Tensor, features: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
        return class_scores(features if self.use_features else logits, target, self.head, self.weight)

    def _shown(self, sets: torch.Tensor, images: torch.Tensor | None):
        if images is None and self.step0 is not None and sets.shape[1] == self.m:
            eye = torch.eye(self.m, dtype=torch.bool, device=sets.device)
            if torch.equal(sets, eye.expand_as(sets)):
                return self.step0
        return self._classify(sets, images)

    def __call__(self, sets: torch.Tensor, images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        l_conf, l_eff, l_cons, l_colla = self.lambdas
        target = self.target if images is None else self.target[images]
        terms: dict[str, torch.Tensor] = {}
        if self.shown_by_classifier:
            logits, features = self._shown(sets, images)
            if l_conf and self.conf_game is None:  # the fallback reads the classifier's logits
                terms["confidence"] = 1 - evidential_uncertainty(logits, self.scale)
            if l_cons:
                terms["consistency"] = self._head(logits, features, target)
        if self.conf_game is not None:
            conf = self.conf_game.logits(sets) if images is None else self.conf_game.logits_on(images, sets)
            terms["confidence"] = 1 - evidential_uncertainty(conf, self.scale)
        if l_eff:
            distances = self.distances if images is None else self.distances[images]
            terms["effectiveness"] = effectiveness_scores(distances, sets)
        if l_colla:
            terms["collaboration"] = 1 - self._head(*self._classify(~sets, images), target)
        total = sum(lam * terms[name] for lam, name in zip(self.lambdas, TERMS) if lam)
        return {"total": total, **{name: terms[name] for name in TERMS if name in terms}}
