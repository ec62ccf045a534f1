"""Loading the configured frozen backbone (shared by API and worker)."""

from __future__ import annotations

import logging
import time
from typing import Any

from service.settings import Settings

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_configured_backbone(settings: Settings) -> Any:
    """Load ``settings.backbone``/``settings.pretrained`` on the configured device.

    Raises ``mmlop_core.errors.BackboneUnavailableError`` when the weights cannot be had.
    """
    import torch
    from mmlop_core import load_backbone

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    start = time.monotonic()
    backbone = load_backbone(
        name=settings.backbone,
        pretrained=settings.pretrained,
        device=resolve_device(settings.device),
        cache_dir=str(settings.cache_dir) if settings.cache_dir else None,
    )
    logger.info("backbone %s/%s loaded in %.1f s", settings.backbone, settings.pretrained,
                time.monotonic() - start)
    return backbone
