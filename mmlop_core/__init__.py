"""mmlop_core: MMLoP few-shot adaptation of a frozen open_clip backbone.

Deep multi-modal low-rank prompts (Oskouie et al., arXiv 2602.21397, 2026) on the IVLP scaffold,
with the LSCL consistency loss and uniform drift correction; see ``docs/METHOD.md``.
Pure library: torch + open_clip (+ safetensors, Pillow); no service imports.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .adapter import Adapter
from .backbone import TINY_MODEL, Backbone, load_backbone
from .checkpoint import export_adapter_zip, load_adapter, save_adapter, zip_bytes
from .config import PRESETS, AdapterConfig, TrainConfig
from .data import load_class_folders, sample_few_shot
from .errors import (BackboneMismatchError, BackboneUnavailableError, CheckpointError, ConfigError, DataError,
                     ImageError, MMLoPError, NonFiniteOutputError, TrainingCanceled)
from .images import open_image
from .predictor import Prediction, Predictor, ServedClasses
from .trainer import TrainProgress, train_adapter

__all__ = [
    "__version__", "Adapter", "AdapterConfig", "Backbone", "BackboneMismatchError", "BackboneUnavailableError",
    "CheckpointError", "ConfigError", "DataError", "ImageError", "MMLoPError", "NonFiniteOutputError", "PRESETS", "Prediction", "Predictor", "ServedClasses",
    "TINY_MODEL", "TrainConfig", "TrainProgress", "TrainingCanceled", "export_adapter_zip", "load_adapter",
    "load_backbone", "load_class_folders", "open_image", "sample_few_shot", "save_adapter", "train_adapter",
    "zip_bytes",
]
