"""Models: one factory over timm, the offline pretrained EfficientNet-Lite0, and the model surface
(:class:`ModelAdapter`) plus masking that attributors and metrics share."""

from reproduce.models.adapter import FEATURES, ModelAdapter
from reproduce.models.checkpoint import load_weights, read_checkpoint
from reproduce.models.data_config import DataConfig, data_config_of
from reproduce.models.factory import PRESETS, available_models, create_model, load_model
from reproduce.models.hooks import (
    capture_output,
    count_passes,
    inference_state,
    record_attention,
    record_backward,
    record_forward,
)
from reproduce.models.masking import FillMasker, Partition, TokenDropMasker, fill_tensor, forward_rows, gaussian_blur

__all__ = [
    "FEATURES",
    "PRESETS",
    "DataConfig",
    "FillMasker",
    "forward_rows",
    "ModelAdapter",
    "Partition",
    "TokenDropMasker",
    "available_models",
    "capture_output",
    "count_passes",
    "create_model",
    "data_config_of",
    "fill_tensor",
    "gaussian_blur",
    "inference_state",
    "load_model",
    "load_weights",
    "read_checkpoint",
    "record_attention",
    "record_backward",
    "record_forward",
]
