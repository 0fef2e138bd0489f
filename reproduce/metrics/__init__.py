"""Attribution metrics: torchmetrics ``Metric``s with functional twins (no Hydra, no Lightning).

Build one per model with ``create_metric(name, model, **knobs)`` (names: ``available_metrics()``),
feed it :class:`AttributionBatch` es with ``update(batch, explain=None)`` and read
``compute()`` (scalars, curves and their x-axes), ``directions``, ``diagnostics``, ``requires``
and ``config()``. See :mod:`reproduce.metrics.base` for the contract.

| name | file | scalars (direction) |
|---|---|---|
| insertion / deletion | insertion_deletion.py | auc (higher / lower) |
| patch_insertion / patch_deletion | patch_curves.py | auc (higher / lower) |
| accuracy_at_budget | patch_curves.py | <score>_shown_<p> (higher), <score>_hidden_<p> (lower) |
| average_highest_confidence | highest_confidence.py | step_<p>, area_<p> (higher) |
| pxap | pxap.py | pxap (higher) |
| pointing_game, energy_pointing_game, iou_auc | localization.py | accuracy, energy, iou_auc (higher) |
| fidelity | fidelity.py | accuracy_remove_<p> (lower), accuracy_keep_<p> (higher) |
| mu_fidelity | mu_fidelity.py | mu_fidelity (higher) |
| robustness | robustness.py | pxap (higher) |
| max_sensitivity | sensitivity.py | max_sensitivity (lower) |
| ssim_stability, mege | stability.py | ssim, mege in % (higher) |
| cost | cost.py | seconds/forward/backward_per_image (lower) |
| model_randomisation, random_logit, data_randomisation | randomisation.py | <similarity>[_mean/_full] (lower), passes (higher) |
| road | road.py | morf_mean (lower), lerf_mean, combined (higher) |
| sparseness, complexity | complexity.py | sparseness (higher), complexity (lower) |
| relevance_mass_accuracy, relevance_rank_accuracy | relevance.py | mass_accuracy, rank_accuracy (higher) |
| interventions | interventions.py | csdc, pc, dc, d, com, sd, bi, ts, mx (higher): FunnyBirds on exact counterfactuals |
| variant_accuracy | variant_accuracy.py | accuracy on a test variant (higher), gap to clean (lower) |
| part_coverage | part_coverage.py | coverage: % of images whose map covers every evidence part (higher), per-part covered fraction |

The shared perturbation machinery (ranking, masked batches, scoring) is in
:mod:`reproduce.metrics.perturbation_curves`. Functional twins are exported here, except the three
named like their module (import them from it: ``from reproduce.metrics.pxap import pxap``,
``...mu_fidelity import mu_fidelity``, ``...ssim import ssim``).
"""

from reproduce.metrics.base import AttributionBatch, AttributionMetric
from reproduce.metrics.cost import Cost, cost_extras
from reproduce.metrics.fidelity import Fidelity, fidelity_correct, top_fraction_masks
from reproduce.metrics.highest_confidence import AverageHighestConfidence, highest_within, highest_within_steps, insertion_steps
from reproduce.metrics.intervention_scores import compose, object_mass
from reproduce.metrics.interventions import Interventions, interventional_scores
from reproduce.metrics.insertion_deletion import Deletion, Insertion, insertion_deletion_curve
from reproduce.metrics.localization import EnergyPointingGame, IoUAUC, PointingGame, energy_inside, iou_auc, pointing_hits
from reproduce.metrics.mu_fidelity import MuFidelity
from reproduce.metrics.patch_curves import AccuracyAtBudget, PatchDeletion, PatchInsertion, patch_curve
from reproduce.metrics.perturbation_curves import Perturber, fraction_counts, rank_descending, target_scores, trapezoid_auc
from reproduce.metrics.pxap import PxAP, pxap_from_histograms, score_histograms
from reproduce.metrics.registry import available_metrics, create_metric, metric_class, register_metric
from reproduce.metrics.robustness import Robustness, drop_pixels, mean_reference, robustness_pxap
from reproduce.metrics.sensitivity import MaxSensitivity, max_sensitivity, sensitivity_noise
from reproduce.metrics.ssim import grayscale
from reproduce.metrics.stability import MeGe, SSIMStability, mege_pairs, ssim_stability
from reproduce.metrics.map_similarity import map_similarity, spearman
from reproduce.metrics.randomisation import DataRandomisation, ModelRandomisation, RandomLogit, other_classes
from reproduce.metrics.road import ROAD, linear_impute
from reproduce.metrics.complexity import Complexity, Sparseness, entropy_complexity, gini_sparseness
from reproduce.metrics.relevance import RelevanceMassAccuracy, RelevanceRankAccuracy, relevance_mass, relevance_rank
from reproduce.metrics.variant_accuracy import VariantAccuracy, variant_correct

__all__ = [
    "Complexity",
    "DataRandomisation",
    "ROAD",
    "RelevanceMassAccuracy",
    "RelevanceRankAccuracy",
    "Sparseness",
    "entropy_complexity",
    "gini_sparseness",
    "linear_impute",
    "relevance_mass",
    "relevance_rank",
    "ModelRandomisation",
    "RandomLogit",
    "map_similarity",
    "other_classes",
    "spearman",
    "AccuracyAtBudget",
    "AttributionBatch",
    "AttributionMetric",
    "AverageHighestConfidence",
    "Cost",
    "Deletion",
    "EnergyPointingGame",
    "Fidelity",
    "Insertion",
    "Interventions",
    "IoUAUC",
    "MaxSensitivity",
    "MeGe",
    "MuFidelity",
    "PatchDeletion",
    "PatchInsertion",
    "Perturber",
    "PointingGame",
    "PxAP",
    "Robustness",
    "SSIMStability",
    "VariantAccuracy",
    "available_metrics",
    "compose",
    "cost_extras",
    "create_metric",
    "drop_pixels",
    "energy_inside",
    "fidelity_correct",
    "fraction_counts",
    "grayscale",
    "highest_within",
    "highest_within_steps",
    "insertion_deletion_curve",
    "insertion_steps",
    "interventional_scores",
    "iou_auc",
    "max_sensitivity",
    "mean_reference",
    "mege_pairs",
    "metric_class",
    "object_mass",
    "patch_curve",
    "pointing_hits",
    "pxap_from_histograms",
    "rank_descending",
    "register_metric",
    "robustness_pxap",
    "score_histograms",
    "sensitivity_noise",
    "ssim_stability",
    "target_scores",
    "top_fraction_masks",
    "trapezoid_auc",
    "variant_correct",
]
