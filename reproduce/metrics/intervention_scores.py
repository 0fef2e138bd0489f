"""Functional core of the interventional metrics (FunnyBirds' protocol, Hesse et al., ICCV 2023, on a
benchmark that can re-render any scene without any set of its objects).

Inputs, per image, on an *object axis* ``O`` in bottom-to-top paint order (what the synthetic
benchmark provides with ``interventions=True``, see :mod:`reproduce.data.synthetic`):

- ``kinds`` ``[B, O]``: :data:`KIND_EVIDENCE` (the class-defining parts, in part order),
  :data:`KIND_DISTRACTOR`, or 0 for a slot the image does not use;
- ``masks`` ``[B, O, H, W]``: the pixels where each object is visible (attribution mass is read here);
- ``footprints`` ``[B, O, H, W]`` and ``layers`` ``[B, O, C, H, W]``: each object's full pixels and
  colours, and ``background`` ``[B, C, H, W]`` (the scene with every object removed), so that
  :func:`compose` paints any counterfactual exactly, on the device, without the dataset.

Per image the model sees the clean image, each object removed alone, and the nested sets the map
ranks: a threshold ``t`` flags object ``o`` *important* when its mass (the map summed inside its
mask dilated by a ``dilation`` x ``dilation`` max-pool) exceeds ``t`` times the map's total sum. The
flagged sets are nested in ``t``, so the 80 thresholds need only the ``n + 1`` top-k sets of the
``n`` candidate objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.errors import InputError
from reproduce.metrics.base import check_finite
from reproduce.models import forward_rows, inference_state

# The object kinds of the batch extras (the same codes as ``reproduce.data.scene_render``; a test checks it).
KIND_PADDING, KIND_EVIDENCE, KIND_DISTRACTOR = 0, 1, 2


def compose(background: torch.Tensor, layers: torch.Tensor, footprints: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Images ``[B, C, H, W]`` with the objects ``keep`` ``[B, O]`` painted over ``background`` in axis order."""
    out = background.clone()
    for o in range(layers.shape[1]):
        where = (footprints[:, o] & keep[:, o, None, None])[:, None]
        out = torch.where(where, layers[:, o], out)
    return out


def object_mass(maps: torch.Tensor, masks: torch.Tensor, dilation: int = 5) -> torch.Tensor:
    """``[B, O]``: the map summed inside each object's mask dilated by a ``dilation``-wide max-pool
    (FunnyBirds: 5; 1 = the mask itself)."""
    region = masks.float()
    if dilation > 1:
        b, o, h, w = region.shape
        region = F.max_pool2d(region.reshape(b * o, 1, h, w), dilation, stride=1, padding=dilation // 2)
        region = region.reshape(b, o, h, w)
    return (maps[:, None].float() * region).sum((-2, -1))


def spearman(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Spearman's rho per row over the ``valid`` entries (average ranks for ties, as scipy);
    NaN where fewer than two entries or either side is constant."""
    def ranks(v: torch.Tensor) -> torch.Tensor:
        below = ((v[:, None, :] < v[:, :, None]) & valid[:, None, :]).sum(-1).double()
        equal = ((v[:, None, :] == v[:, :, None]) & valid[:, None, :]).sum(-1).double()
        return below + (equal + 1) / 2

    n = valid.sum(1).double()
    rx, ry = ranks(x.double()), ranks(y.double())
    mx, my = ((rx * valid).sum(1) / n)[:, None], ((ry * valid).sum(1) / n)[:, None]
    dx, dy = (rx - mx) * valid, (ry - my) * valid
    rho = (dx * dy).sum(1) / ((dx * dx).sum(1) * (dy * dy).sum(1)).sqrt()
    return torch.where((n >= 2) & torch.isfinite(rho), rho, torch.full_like(rho, float("nan")))


@dataclass
class Scenes:
    """One batch of scenes with their objects (see the module docstring)."""

    images: torch.Tensor
    kinds: torch.Tensor
    masks: torch.Tensor
    footprints: torch.Tensor
    layers: torch.Tensor
    background: torch.Tensor

    @property
    def real(self) -> torch.Tensor:
        return self.kinds != KIND_PADDING

    def logits(self, model: nn.Module, rows: torch.Tensor, keep: torch.Tensor, max_batch: int,
               indices: torch.Tensor) -> torch.Tensor:
        """Logits ``[R, K]`` of scene ``rows[r]`` with the objects ``keep[r]`` (``[R, O]``), ``max_batch``
        images per forward pass."""
        outs = []
        with inference_state(model), torch.no_grad():
            step = forward_rows(max_batch, self.background)  # capped on a CPU, as every masked forward
            for start in range(0, len(rows), step):
                r, k = rows[start:start + step], keep[start:start + step]
                outs.append(model(compose(self.background[r], self.layers[r], self.footprints[r], k)).float())
        if not outs:
            return self.images.new_zeros((0, 0))
        logits = torch.cat(outs)
        check_finite(logits, indices[rows], "Model outputs on counterfactual scenes", "check the model on these samples")
        return logits


def check_scenes(scenes: Scenes) -> None:
    b, c, h, w = scenes.images.shape
    o = scenes.kinds.shape[1] if scenes.kinds.dim() == 2 else -1
    shapes = {"object_kinds": (scenes.kinds, (b, o)), "object_masks": (scenes.masks, (b, o, h, w)),
              "object_footprints": (scenes.footprints, (b, o, h, w)), "object_layers": (scenes.layers, (b, o, c, h, w)),
              "images_without_objects": (scenes.background, (b, c, h, w))}
    for key, (value, want) in shapes.items():
        if tuple(value.shape) != want:
            raise InputError(f"batch.extra[{key!r}] has shape {tuple(value.shape)}, expected {want} for images "
                             f"{(b, c, h, w)} with {o} object slots.")
    if not bool((scenes.kinds == KIND_EVIDENCE).any(1).all()):
        raise InputError("every scene needs at least one evidence object (object_kinds == 1).")


@dataclass(frozen=True)
class Protocol:
    """The knobs of the protocol (FunnyBirds' defaults): ``thresholds`` (fractions of the map's sum),
    ``dilation``, ``tolerance`` (a removal changes the target logit "not at all" below
    ``tolerance * |logit|``), ``completeness`` (objects PC and DC may remove: ``evidence`` as
    FunnyBirds' bird parts, or ``all``), ``single_deletion`` (objects SD correlates over: ``all`` or
    ``evidence``), ``contrastivity`` (TS on two-part scenes) and ``max_batch``."""

    thresholds: tuple[float, ...]
    dilation: int = 5
    tolerance: float = 0.05
    completeness: str = "evidence"
    single_deletion: str = "all"
    contrastivity: bool = False
    max_batch: int = 256


def _nested_predictions(model, scenes: Scenes, mass, candidates, protocol: Protocol, indices):
    """Predictions ``[B, O + 1]`` with the top-k candidates removed (deletion, ``dc``) and with all
    candidates but the top-k removed (preservation, ``pc``), for k = 0..O (k > n: as k = n)."""
    b, o = candidates.shape
    real = scenes.real
    order = torch.sort(torch.where(candidates, mass, torch.full_like(mass, -torch.inf)), dim=1, descending=True,
                       stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(o, device=order.device).expand(b, o))
    ks = torch.arange(o + 1, device=mass.device)
    top = candidates[:, None, :] & (rank[:, None, :] < ks[None, :, None])  # [B, O + 1, O]
    out = {}
    for name, keep in (("dc", real[:, None] & ~top), ("pc", real[:, None] & ~(candidates[:, None] & ~top))):
        needed = (keep != real[:, None]).any(-1)  # identical to the clean scene otherwise
        rows, ks_needed = needed.nonzero(as_tuple=True)
        pred = torch.full((b, o + 1), -1, dtype=torch.long, device=mass.device)
        logits = scenes.logits(model, rows, keep[rows, ks_needed], protocol.max_batch, indices)
        if len(rows):
            pred[rows, ks_needed] = logits.argmax(-1)
        out[name] = pred
    return out["dc"], out["pc"]


def tally(model: nn.Module, scenes: Scenes, maps: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
          protocol: Protocol, explain=None, indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Sums over one batch that :func:`summarise` turns into scores (sums add across batches and
    processes): the sums of :func:`tally_rows`, on the CPU."""
    return {k: v.sum(0).cpu() for k, v in tally_rows(model, scenes, maps, labels, targets, protocol, explain, indices).items()}


def tally_rows(model: nn.Module, scenes: Scenes, maps: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor,
               protocol: Protocol, explain=None, indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each image's contribution (float64 rows ``[B, ...]``) to the sums :func:`summarise` reads. Per
    threshold ``[B, T]``: ``csdc`` (0 for misclassified images) with ``csdc_n`` (1 for correctly
    classified ones), ``pc``, ``dc`` (over ``images``, 1 per image), ``d`` (0 without an irrelevant
    object) with ``d_n``; ``[B]``: ``sd``/``sd_n``, ``bi_relevant``/``bi_total`` and ``ts``/``ts_n``."""
    check_scenes(scenes)
    indices = torch.arange(len(labels), device=labels.device) if indices is None else indices
    b, o = scenes.kinds.shape
    real, evidence = scenes.real, scenes.kinds == KIND_EVIDENCE
    thresholds = torch.tensor(protocol.thresholds, dtype=torch.float64, device=maps.device)
    mass = object_mass(maps, scenes.masks, protocol.dilation).double()
    total = maps.double().sum((1, 2))
    flagged = (mass[:, None, :] > thresholds[None, :, None] * total[:, None, None]) & real[:, None]  # [B, T, O]

    with inference_state(model), torch.no_grad():
        clean = model(scenes.images).float()
    pred = clean.argmax(-1)
    rows, objs = real.nonzero(as_tuple=True)
    keep = real[rows] & (torch.arange(o, device=rows.device)[None] != objs[:, None])
    single = torch.full((b, o, clean.shape[1]), float("nan"), device=clean.device)
    single[rows, objs] = scenes.logits(model, rows, keep, protocol.max_batch, indices)
    s0 = clean.gather(1, targets[:, None]).double()  # [B, 1]
    removed = single.gather(2, targets[:, None, None].expand(b, o, 1))[..., 0].double()
    drop = s0 - removed

    candidates = evidence if protocol.completeness == "evidence" else real
    dc_pred, pc_pred = _nested_predictions(model, scenes, mass, candidates, protocol, indices)
    k_t = (flagged & candidates[:, None]).sum(-1)  # [B, T]: the flagged candidates are the top k_t
    pc_pred, dc_pred = (torch.where(p < 0, pred[:, None], p).gather(1, k_t) for p in (pc_pred, dc_pred))
    correct = pred == labels
    csdc = (flagged & evidence[:, None]).sum(-1).double() / evidence.sum(-1, keepdim=True)

    irrelevant = real & ((drop.abs() < protocol.tolerance * s0.abs()) | (removed > s0))
    has = irrelevant.any(1)
    j = (flagged & irrelevant[:, None]).sum(-1).double() / irrelevant.sum(-1, keepdim=True).clamp_min(1)
    distractor = scenes.kinds == KIND_DISTRACTOR
    relevant = distractor & (drop.abs() >= protocol.tolerance * s0.abs()) & (s0 > removed)

    over = real if protocol.single_deletion == "all" else evidence
    rho = spearman(mass, drop, over)
    ok = ~torch.isnan(rho)
    zero = torch.zeros((), dtype=torch.float64, device=maps.device)
    out = {
        "images": torch.ones(b, dtype=torch.float64, device=maps.device), "pc": (pc_pred == pred[:, None]).double(),
        "dc": (dc_pred != pred[:, None]).double(),
        "csdc": torch.where(correct[:, None], csdc, zero), "csdc_n": correct.double(),
        "d": torch.where(has[:, None], j, zero), "d_n": has.double(),
        "sd": torch.where(ok, 0.5 * rho + 0.5, zero), "sd_n": ok.double(),
        "bi_relevant": relevant.double().sum(1), "bi_total": distractor.double().sum(1),
    }
    if protocol.contrastivity:
        out["ts"], out["ts_n"] = _target_sensitivity(scenes, single, clean, targets, protocol, explain, indices)
    return {k: v.double() for k, v in out.items()}


def _target_sensitivity(scenes: Scenes, single, clean, targets, protocol: Protocol, explain, indices):
    """FunnyBirds' TS on two-part scenes: for class c with parts [A, B] (part order), class c-1
    shares A and class c+1 shares B (the synthetic two-part design). Where the model agrees (removing
    A lowers c-1's logit more than removing B, and vice versa for c+1), the map for c-1 must put more
    mass on A than the map for c+1 does, and less on B: two 0/1 entries per such image. Returns per image
``[B]`` the hits and the number of entries (2 for such images, else 0)."""
    evidence = scenes.kinds == KIND_EVIDENCE
    if explain is None or not bool((evidence.sum(1) == 2).all()):
        raise InputError("contrastivity (TS) needs explain= and scenes with exactly two evidence parts "
                         "(the two-part variant); set contrastivity=False otherwise.")
    b, k = clean.shape
    parts = evidence.double().cumsum(1)  # part A is the first evidence slot, B the second
    a_idx, b_idx = (((parts == p) & evidence).double().argmax(1) for p in (1, 2))
    rows = torch.arange(b, device=clean.device)
    c1, c2 = (targets - 1) % k, (targets + 1) % k
    change = lambda part, c: single[rows, part, c] - clean[rows, c]  # noqa: E731  (negative = a drop)
    valid = (change(a_idx, c1) < change(b_idx, c1)) & (change(b_idx, c2) < change(a_idx, c2))
    v = valid.nonzero().flatten()
    hits, entries = (torch.zeros(b, dtype=torch.float64, device=clean.device) for _ in range(2))
    if not len(v):
        return hits, entries
    masks = scenes.masks[v]
    with torch.enable_grad():
        m1 = object_mass(explain(scenes.images[v], c1[v]).detach(), masks, protocol.dilation)
        m2 = object_mass(explain(scenes.images[v], c2[v]).detach(), masks, protocol.dilation)
    check_finite(torch.cat([m1, m2], 1), indices[v], "Maps for the contrast classes", "check the attributor")
    ra, rb = a_idx[v], b_idx[v]
    r = torch.arange(len(v), device=v.device)
    hits[v] = (m1[r, ra] > m2[r, ra]).double() + (m1[r, rb] < m2[r, rb]).double()
    entries[v] = 2.0
    return hits, entries


def summarise(sums: dict[str, torch.Tensor], thresholds: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """Scores from pooled :func:`tally` sums: the threshold maximising CSDC/3 + PC/3 + DC/3 + D is
    chosen once (FunnyBirds' joint selection) and every threshold metric is read there;
    Com = ((CSDC + PC + DC)/3 + D)/2, Cor = SD, Con = TS, and the summary mX = mean(Com, Cor[, Con]).
    A family without a valid image is NaN (e.g. CSDC when no image is correctly classified). The
    curves over the thresholds come with the scalars of :func:`summarise_batch`."""
    batched = {k: torch.as_tensor(v, dtype=torch.float64)[None] for k, v in sums.items()}
    out = {key: value[0] for key, value in summarise_batch(batched, thresholds).items()}
    x = torch.tensor(thresholds, dtype=torch.float64)
    for key, curve in _curves(batched).items():
        out[f"{key}_curve"], out[f"{key}_curve_x"] = curve[0], x
    return out


def summarise_batch(sums: dict[str, torch.Tensor], thresholds: tuple[float, ...]) -> dict[str, torch.Tensor]:
    """The scalars of :func:`summarise` for ``R`` sets of sums at once (each ``[R, ...]``, e.g.
    bootstrap resamples of the per-image rows): the threshold is selected again on each set, as
    :func:`summarise` does on the pooled test set."""
    curves = _curves(sums)
    joint = curves["csdc"] / 3 + curves["pc"] / 3 + curves["dc"] / 3 + curves["d"]
    best = torch.nan_to_num(joint, nan=-1.0).argmax(1, keepdim=True)  # [R, 1]: the first of tied maxima
    out = {key: curve.gather(1, best)[:, 0] for key, curve in curves.items()}
    out["com"] = ((out["csdc"] + out["pc"] + out["dc"]) / 3 + out["d"]) / 2
    out["sd"] = _ratio(sums["sd"], sums["sd_n"])
    out["bi"] = 1 - _ratio(sums["bi_relevant"], sums["bi_total"])
    families = [out["com"], out["sd"]]
    if "ts" in sums:
        out["ts"] = _ratio(sums["ts"], sums["ts_n"])
        families.append(out["ts"])
    out["mx"] = torch.stack(families).mean(0)
    out["threshold"] = torch.tensor(thresholds, dtype=torch.float64, device=best.device)[best[:, 0]]
    for key in ("csdc_n", "d_n", "sd_n", "ts_n"):
        if key in sums:  # images counted by each family (TS has two entries per image)
            out[f"images_{key[:-2]}"] = sums[key] / (2 if key == "ts_n" else 1)
    return out


def _curves(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``[R, T]`` per family: CSDC, PC, DC and D at every threshold."""
    n = sums["images"][:, None]
    return {"csdc": _ratio(sums["csdc"], sums["csdc_n"][:, None]), "pc": sums["pc"] / n, "dc": sums["dc"] / n,
            "d": 1 - _ratio(sums["d"], sums["d_n"][:, None])}


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, NaN where ``den`` is 0 (no image of the family)."""
    return torch.where(den > 0, num / den, torch.full_like(num, float("nan")))
