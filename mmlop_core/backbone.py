"""Loading the frozen CLIP backbone through open_clip.

The backbone is built with `open_clip.create_model_and_transforms` and never edited: prompted
encoders reach its modules (docs/METHOD.md section 1, "Wrap, don't fork"). Sources of weights:
an open_clip pretrained tag (downloaded where the network allows), a local checkpoint file, or
``"none"`` (seeded random init for tests and offline demos).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

from .errors import BackboneUnavailableError, ConfigError
from .hub import reachable, weights_source
from .shipped import shipped_tags, verified_path

log = logging.getLogger(__name__)

TINY_MODEL = "mmlop-tiny"
_CONFIG_DIR = Path(__file__).with_name("model_configs")
open_clip.add_model_config(_CONFIG_DIR)

NO_WEIGHTS = "none"


@dataclass
class Backbone:
    """A frozen open_clip CLIP model plus what prompting and serving need around it.

    Attributes:
        model: open_clip `CLIP` in eval mode with every parameter frozen.
        name: open_clip model name, e.g. ``"ViT-B-16"``.
        pretrained: the weights source it was loaded from (tag, file path or ``"none"``).
        weights_hash: sha256 hex digest of the weights (see :func:`weights_hash`).
        preprocess: PIL image -> FloatTensor (3, image_size, image_size), CLIP-normalised.
        tokenizer: open_clip tokenizer; ``tokenizer(list[str])`` -> LongTensor (N, context).
        device: where the model lives.
        image_size: input side in pixels.
        text_width / vision_width / embed_dim: d_t, d_v and the joint feature dimension.
        text_layers / vision_layers: number of transformer blocks per tower.
    """

    model: torch.nn.Module
    name: str
    pretrained: str
    weights_hash: str
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Any
    device: torch.device
    image_size: int
    text_width: int
    vision_width: int
    embed_dim: int
    text_layers: int
    vision_layers: int

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable identity of the backbone (stored in every checkpoint)."""
        return {"name": self.name, "pretrained": self.pretrained, "weights_hash": self.weights_hash,
                "text_width": self.text_width, "vision_width": self.vision_width,
                "embed_dim": self.embed_dim, "image_size": self.image_size}


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 hex digest over the model's state dict (names, shapes, dtypes and raw bytes).

    Two backbones with equal digests produce equal features, so an adapter records it and
    refuses any other backbone. Cost: one pass over the weights (about 1 s for ViT-B/16 on CPU).
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r} is not a torch device (use 'cpu', 'cuda', 'cuda:0' or 'auto')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} asked for CUDA but no CUDA device is available; use 'cpu'")
    return dev


def _is_file_source(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def check_weights_source(name: str, pretrained: str) -> None:
    """Refuse a weights source that cannot be ``name``'s, without loading anything.

    Accepted: ``"none"``, a tag shipped with the library for ``name`` (``fmnist`` for
    ``mmlop-tiny``), one of open_clip's pretrained tags for ``name``, or an existing file.

    Raises:
        ConfigError: ``name`` is not an open_clip model.
        BackboneUnavailableError: a directory, a missing file, or a tag of another model.
    """
    if name not in open_clip.list_models():
        raise ConfigError(f"backbone={name!r} is not an open_clip model name (e.g. 'ViT-B-16' or '{TINY_MODEL}')")
    if pretrained == NO_WEIGHTS:
        return
    if _is_file_source(pretrained):
        if os.path.isdir(pretrained):
            raise BackboneUnavailableError(
                f"backbone weights {pretrained!r} is a directory, not a weights file; point MMLOP_PRETRAINED/"
                f"--pretrained at the checkpoint file inside it")
        if not os.path.isfile(pretrained):
            raise BackboneUnavailableError(
                f"backbone weights file {pretrained!r} does not exist; point MMLOP_PRETRAINED/--pretrained at an "
                f"open_clip checkpoint file for {name}, or use 'none' for a functional demo")
        return
    tags = open_clip.list_pretrained_tags_by_model(name) + shipped_tags(name)
    if pretrained not in tags:
        raise BackboneUnavailableError(
            f"pretrained={pretrained!r} is neither a file nor an open_clip tag for {name} "
            f"(tags: {', '.join(tags) or 'none'}); give a local checkpoint path or 'none'")


def _create(name: str, pretrained: str, cache_dir: str | None, seed: int) -> tuple[torch.nn.Module, Any]:
    """open_clip model + validation transform for one weights source; typed errors."""
    if name not in open_clip.list_models():
        raise ConfigError(f"backbone={name!r} is not an open_clip model name (e.g. 'ViT-B-16' or '{TINY_MODEL}')")
    quick_gelu = False
    if pretrained == NO_WEIGHTS:
        log.warning("backbone %s uses seeded random weights (pretrained='none'): functional demo only", name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
        return model, preprocess
    shipped = verified_path(name, pretrained)
    if shipped is not None:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(shipped))
        return model, preprocess
    check_weights_source(name, pretrained)
    if not _is_file_source(pretrained):
        cfg = open_clip.get_pretrained_cfg(name, pretrained)
        quick_gelu = bool(cfg.get("quick_gelu", False))
        source = weights_source(cfg, cache_dir)
        if source.cached is None and not reachable(source.host, source.port):  # fail fast: open_clip would retry for ~1 min
            # info, not error: the message says it all, and the CLI prints it as its one error line
            log.info("cannot fetch %s weights %r: %s is unreachable and they are not in the local cache",
                     name, pretrained, source.host)
            raise BackboneUnavailableError(_no_weights_message(
                name, pretrained, f"{source.host} is unreachable and they are not in the local cache"))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, cache_dir=cache_dir, force_quick_gelu=quick_gelu)
    except Exception as exc:  # network, hub, corrupt file: open_clip raises many types
        if _is_file_source(pretrained):
            raise BackboneUnavailableError(
                f"{pretrained!r} is not a readable {name} checkpoint ({type(exc).__name__}: "
                f"{_first_sentence(str(exc))}); the file is corrupt, truncated, or holds another model's weights "
                f"(e.g. mmlop-tiny's for {name}); use a checkpoint of {name}, or 'none' for a functional "
                f"demo") from exc
        log.error("loading %s weights %r failed: %s: %s", name, pretrained, type(exc).__name__, exc)
        raise BackboneUnavailableError(_no_weights_message(name, pretrained, "the download failed (details in the log)")) from exc
    return model, preprocess


def _first_sentence(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cut at a word boundary with an ellipsis when over ``limit``."""
    line = text.splitlines()[0] if text else "no detail"
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + " ..."


def _no_weights_message(name: str, pretrained: str, why: str) -> str:
    """One complete message naming every setting that fixes missing weights (issue 12 D.15)."""
    return (f"could not load {name} weights {pretrained!r}: {why}. Fix: point "
            f"MMLOP_PRETRAINED (CLI: --pretrained) at a local {name} checkpoint file, or use the offline tiny "
            f"backbone shipped with the library (MMLOP_BACKBONE={TINY_MODEL} MMLOP_PRETRAINED=fmnist; CLI: "
            f"--backbone {TINY_MODEL} --pretrained fmnist), or 'none' for random weights (a functional demo)")


def load_backbone(name: str = "ViT-B-16", pretrained: str = "openai", device: str | torch.device = "cpu",
                  cache_dir: str | None = None, seed: int = 0) -> Backbone:
    """Build a frozen open_clip CLIP backbone.

    Args:
        name: open_clip model name; ``"mmlop-tiny"`` is our small test config (9 blocks per
            tower, widths 128, 64 px input).
        pretrained: open_clip tag (e.g. ``"openai"``), a tag shipped with the library
            (``"fmnist"`` for ``"mmlop-tiny"``, sha256-verified on every load; see
            :mod:`mmlop_core.shipped`), path of a local checkpoint file, or ``"none"`` for random
            weights drawn with `seed`.
        device: ``"cpu"``, ``"cuda[:i]"`` or ``"auto"``.
        cache_dir: where open_clip caches downloaded weights.
        seed: seed of the random init when ``pretrained="none"``.

    Returns:
        A :class:`Backbone` whose parameters all have ``requires_grad=False``.

    Raises:
        BackboneUnavailableError: weights can be neither fetched nor read, or shipped weights
            fail their sha256 check; the message says what to do.
        ConfigError: unknown model name, unavailable device, or a non-ViT CLIP architecture.
    """
    dev = _resolve_device(device)
    model, preprocess = _create(name, pretrained, cache_dir, seed)
    visual = getattr(model, "visual", None)
    if not (hasattr(model, "token_embedding") and hasattr(visual, "conv1") and hasattr(visual, "transformer")):
        raise ConfigError(f"backbone={name!r} is not a ViT CLIP with open_clip's own text tower; MMLoP needs one")
    model.eval().requires_grad_(False).to(dev)
    digest = weights_hash(model)
    size = visual.image_size
    return Backbone(
        model=model, name=name, pretrained=pretrained, weights_hash=digest, preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(name), device=dev,
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        text_width=int(model.token_embedding.embedding_dim), vision_width=int(visual.class_embedding.shape[-1]),
        embed_dim=int(visual.output_dim),
        text_layers=len(model.transformer.resblocks), vision_layers=len(visual.transformer.resblocks),
    )
