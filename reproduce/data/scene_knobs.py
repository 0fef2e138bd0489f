"""Difficulty knobs of the synthetic benchmark and its two presets.

Every knob is checked before anything is drawn, with the bound it breaks named in the message:

- ``evidence_scale`` ``[lo, hi]``: each image draws a factor in this range that multiplies the
  evidence radius (a single object is 14-28 px across at scale 1, each of two parts 12-20 px, both
  at 64x64). Bounds [0.5, 1.5]: below, a part is too small to show its texture; above, two parts no
  longer fit apart in the image.
- ``contrast`` ``[lo, hi]``: each object (evidence and distractors) draws an opacity in this range
  and is painted as ``background + opacity * (pattern - background)``, against the background
  texture under it. Bounds [0.2, 1]: from 0.2 up every object pixel still differs from the
  background under it (the colours leave the background range by >= 12 levels), so masks stay exact.
- ``occlusion`` and ``occlusion_rate``: a fraction ``occlusion_rate`` of the images gets one extra
  distractor (the *occluder*) drawn over the evidence, entering the box of one evidence part from
  one side by a fraction of its width drawn in ``(0, occlusion]``. Bound ``occlusion <= 0.5``: the
  far half of every shape then stays visible, so the evidence is never hidden whole.
- ``distractors`` ``[lo, hi]``: distractor objects per image besides the occluder. Bound ``hi <= 8``:
  more do not fit the scene with the spacing rule (slots that find no free place stay empty).
- ``confusers``: the fraction of distractors (besides the occluder) that wear a class's colour pattern
  on the shape of another class, so that the class colours alone no longer find the evidence: only
  the shape-and-pattern pair does. A confuser is never a class design, so it carries no label
  information. In [0, 1].
- ``label_noise``: the fraction of TRAINING labels replaced by another class drawn uniformly
  (val and test labels stay clean). Bound ``< 1``.

Presets: ``easy`` is the benchmark as it was before the knobs existed (ResNet-10-T 100 %, the 8x8-token
ViT 99.7 % test accuracy with the quickstart trainings and light augmentation); ``hard`` is the
default (ResNet-10-T 94.1 %; the micro ViT does not learn it in its 8 default epochs: 31.9 %, it needs
the shape-and-colour binding that the confusers demand). Measured with ``experiment=quickstart_cnn``
/ ``quickstart_vit``, seed 0.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from reproduce.checks import check_choice, check_fraction, check_number
from reproduce.errors import ConfigError

EVIDENCE_SCALE_BOUNDS = (0.5, 1.5)
MIN_CONTRAST = 0.2
MAX_OCCLUSION = 0.5
MAX_DISTRACTORS = 8


@dataclass(frozen=True)
class Difficulty:
    evidence_scale: tuple[float, float] = (1.0, 1.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    occlusion: float = 0.0
    occlusion_rate: float = 0.0
    distractors: tuple[int, int] = (1, 3)
    confusers: float = 0.0
    label_noise: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (lists for ranges): recorded with every dataset and hashed into its cache key."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def occludes(self) -> bool:
        return self.occlusion > 0 and self.occlusion_rate > 0


PRESETS = {
    "easy": Difficulty(),
    "hard": Difficulty(
        evidence_scale=(0.5, 0.8),
        contrast=(0.25, 0.6),
        occlusion=0.45,
        occlusion_rate=0.5,
        distractors=(2, 5),
        confusers=1.0,
        label_noise=0.05,
    ),
}


def _range(name: str, value: Any, low: float, high: float, integer: bool = False) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{name} must be a range [lo, hi], got {value!r}.")
    if integer:
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{name} must be a range of integers [lo, hi], got {value!r}.")
        lo, hi = (int(v) for v in value)
    else:
        lo, hi = (check_number(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not low <= lo <= hi <= high:
        raise ConfigError(f"{name}={list(value)} must satisfy {low} <= lo <= hi <= {high}{_why(name)}.")
    return lo, hi


def _why(name: str) -> str:
    return {
        "evidence_scale": " (smaller evidence cannot show its texture; larger parts no longer fit apart)",
        "contrast": f" (below {MIN_CONTRAST} an object pixel may equal the background under it)",
        "distractors": f" (more than {MAX_DISTRACTORS} distractors do not fit the scene with the spacing rule)",
    }.get(name, "")


def resolve_difficulty(preset: str, overrides: Mapping[str, Any]) -> Difficulty:
    """The preset with the knobs given in ``overrides`` (``None`` = the preset's value), checked."""
    base = PRESETS[check_choice("preset", preset, PRESETS)]
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(asdict(base))
    if unknown:  # a programming error: the dataset passes exactly the knob names
        raise ConfigError(f"unknown difficulty knobs {sorted(unknown)}.")
    knobs = replace(base, **{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    occlusion = check_number("occlusion", knobs.occlusion, non_negative=True)
    if occlusion > MAX_OCCLUSION:
        raise ConfigError(
            f"occlusion={occlusion} can hide a whole evidence object; use occlusion <= {MAX_OCCLUSION} "
            "(the fraction of an evidence part's box the occluder may cover, from one side)."
        )
    label_noise = check_number("label_noise", knobs.label_noise, non_negative=True)
    if label_noise >= 1:
        raise ConfigError(f"label_noise={label_noise} leaves no correct training label; use 0 <= label_noise < 1.")
    return Difficulty(
        evidence_scale=_range("evidence_scale", knobs.evidence_scale, *EVIDENCE_SCALE_BOUNDS),
        contrast=_range("contrast", knobs.contrast, MIN_CONTRAST, 1.0),
        occlusion=occlusion,
        occlusion_rate=check_fraction("occlusion_rate", knobs.occlusion_rate, open_low=False),
        distractors=_range("distractors", knobs.distractors, 0, MAX_DISTRACTORS, integer=True),
        confusers=check_fraction("confusers", knobs.confusers, open_low=False),
        label_noise=label_noise,
    )
