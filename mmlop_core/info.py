"""Adapter size arithmetic from an open_clip model config, without loading any weights."""
from __future__ import annotations

from typing import Any

import open_clip
import torch

from .adapter import Adapter
from .backbone import TINY_MODEL, check_weights_source  # noqa: F401  (TINY_MODEL: registers mmlop-tiny)
from .checkpoint import adapter_files
from .config import AdapterConfig
from .errors import ConfigError
from .prompts import LowRankPrompts


def tower_sizes(name: str) -> dict[str, int]:
    """Widths and block counts of an open_clip model config.

    Returns:
        dict with text_width, vision_width, embed_dim, text_layers, vision_layers.

    Raises:
        ConfigError: unknown model name or a config without a plain ViT/text transformer.
    """
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"backbone={name!r} is not an open_clip model name (e.g. 'ViT-B-16' or '{TINY_MODEL}')")
    text, vision = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    if "hf_model_name" in text or "timm_model_name" in vision or not isinstance(vision.get("layers"), int):
        raise ConfigError(f"backbone={name!r} is not a ViT CLIP with open_clip's own text tower")
    return {"text_width": int(text.get("width", 512)), "vision_width": int(vision["width"]),
            "embed_dim": int(cfg["embed_dim"]), "text_layers": int(text.get("layers", 12)),
            "vision_layers": int(vision["layers"])}


def adapter_info(backbone: str, pretrained: str, preset: str, classes: int = 10,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trainable parameters and checkpoint size of an adapter for `backbone`.

    `checkpoint_bytes` is the exact size of both checkpoint files for `classes` classes named
    ``class_0 ..`` (class features are C x D fp32, so each class adds 4*D bytes).

    Raises:
        ConfigError: unknown backbone or preset, invalid override, depth beyond the backbone.
        BackboneUnavailableError: ``pretrained`` cannot be weights of ``backbone`` (e.g. the tiny
            backbone's ``fmnist`` tag for ViT-B-16, or a missing file); nothing is loaded.
    """
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ConfigError(f"classes={classes!r} must be an integer >= 1")
    sizes = tower_sizes(backbone)
    check_weights_source(backbone, pretrained)
    config = AdapterConfig.from_dict({"preset": preset, **(overrides or {})})
    prompts = LowRankPrompts(config, sizes["text_width"], sizes["vision_width"],
                             sizes["text_layers"], sizes["vision_layers"])
    names = [f"class_{i}" for i in range(classes)]
    ident = {"name": backbone, "pretrained": pretrained, "weights_hash": "0" * 64, **sizes}
    dummy = Adapter(config=config, class_names=names, prompts=prompts,
                    class_features=torch.zeros(classes, sizes["embed_dim"]), image_drift=None, backbone=ident)
    files = adapter_files(dummy)
    return {"backbone": backbone, "pretrained": pretrained, "preset": preset,
            "trainable_parameters": prompts.trainable_parameters,
            "prompt_bytes_fp32": 4 * prompts.trainable_parameters,
            "checkpoint_bytes": sum(len(v) for v in files.values()), "classes": classes,
            "depth": {"text": config.text_depth, "vision": config.vision_depth},
            "rank": config.rank, "n_ctx": config.n_ctx, "share_u": config.share_u.value if config.rank is not None else None,
            **sizes}
