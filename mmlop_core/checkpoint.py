"""Adapter checkpoints: JSON config + safetensors weights, never pickle.

Layout (after PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``):
- ``adapter_config.json``: format version, library version, adapter config, class names,
  templates, backbone identity (name, pretrained, weights hash, widths), trainable count,
  train config, metrics, and the expected shape of every tensor.
- ``adapter_model.safetensors``: ``prompts.<param>`` (fp32), ``class_features`` (C, D) fp32
  with UDC applied, and ``image_drift`` (D,) fp32 when present.
The backbone itself is never stored.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .adapter import Adapter
from .backbone import Backbone
from .config import AdapterConfig
from .errors import BackboneMismatchError, CheckpointError, ConfigError
from .prompts import LowRankPrompts
from .templates import ensemble_templates

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # refuse zip members larger than this when reading


def _tensors(adapter: Adapter) -> dict[str, torch.Tensor]:
    out = {f"prompts.{k}": v.detach().cpu().float().contiguous() for k, v in adapter.prompts.state_dict().items()}
    out["class_features"] = adapter.class_features.detach().cpu().float().contiguous()
    if adapter.image_drift is not None:
        out["image_drift"] = adapter.image_drift.detach().cpu().float().contiguous()
    return out


def adapter_files(adapter: Adapter) -> dict[str, bytes]:
    """The two checkpoint files as bytes: {CONFIG_FILE: json, WEIGHTS_FILE: safetensors}."""
    tensors = _tensors(adapter)
    meta = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "config": adapter.config.to_dict(),
        "class_names": list(adapter.class_names),
        "templates": ensemble_templates(adapter.config.template, adapter.config.ensemble_templates),
        "backbone": adapter.backbone,
        "trainable_parameters": adapter.trainable_parameters,
        "train_config": adapter.train_config,
        "metrics": adapter.metrics,
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    return {CONFIG_FILE: json.dumps(meta, indent=2, sort_keys=True).encode(), WEIGHTS_FILE: st_save(tensors)}


def save_adapter(adapter: Adapter, directory: str | os.PathLike) -> int:
    """Write the checkpoint files into `directory` (created if missing).

    Each file is written to a temporary name and renamed, so a reader never sees half a file;
    for an atomic checkpoint as a whole, write into a fresh directory and rename it.

    Returns:
        Total bytes written (about 46 KB for `mmlop` at ViT-B/16, 10 classes add 20 KB).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, data in adapter_files(adapter).items():
        tmp = directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
        total += len(data)
    return total


def export_adapter_zip(directory: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Zip a checkpoint directory's two files into `dest`; returns the zip's size in bytes.

    Raises:
        CheckpointError: a checkpoint file is missing.
    """
    directory = Path(directory)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory / name} is missing; not an adapter checkpoint")
            zf.write(directory / name, arcname=name)
    return Path(dest).stat().st_size


def _read_files(path: Path) -> tuple[bytes, bytes]:
    if path.is_dir():
        try:
            return (path / CONFIG_FILE).read_bytes(), (path / WEIGHTS_FILE).read_bytes()
        except FileNotFoundError as exc:
            raise CheckpointError(f"{exc.filename} is missing; an adapter directory holds {CONFIG_FILE} and {WEIGHTS_FILE}") from exc
    if not path.is_file():
        raise CheckpointError(f"adapter path {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            out = []
            for name in (CONFIG_FILE, WEIGHTS_FILE):
                member = next((i for i in zf.infolist() if i.filename.rsplit("/", 1)[-1] == name), None)
                if member is None:
                    raise CheckpointError(f"{path.name} has no {name}; not an adapter archive")
                if member.file_size > MAX_MEMBER_BYTES:
                    raise CheckpointError(f"{path.name}: {name} is {member.file_size} bytes, over the {MAX_MEMBER_BYTES} limit")
                out.append(zf.read(member))
            return out[0], out[1]
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{str(path)!r} is neither an adapter directory nor a zip archive") from exc


def load_adapter(path: str | os.PathLike, backbone: Backbone | None = None) -> Adapter:
    """Read a checkpoint directory or zip and validate it.

    Args:
        path: directory holding the two files, or a zip of them (as exported by the API).
        backbone: if given, the adapter must have been trained on these exact weights.

    Returns:
        :class:`Adapter` on CPU.

    Raises:
        CheckpointError: missing/corrupt files, unknown format version, wrong tensor names,
            shapes or dtypes, or an invalid config.
        BackboneMismatchError: `backbone` differs from the one the adapter was trained on.
    """
    raw_config, raw_weights = _read_files(Path(path))
    return adapter_from_bytes(raw_config, raw_weights, backbone, source=str(path))


def adapter_from_bytes(raw_config: bytes, raw_weights: bytes, backbone: Backbone | None = None,
                       source: str = "checkpoint") -> Adapter:
    """Validate and build an :class:`Adapter` from the two files' bytes (see :func:`load_adapter`)."""
    try:
        meta = json.loads(raw_config)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{source}: {CONFIG_FILE} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{source}: unsupported checkpoint format_version {meta.get('format_version') if isinstance(meta, dict) else None!r}; expected {FORMAT_VERSION}")
    try:
        config = AdapterConfig.from_dict(meta["config"])
        class_names = [str(n) for n in meta["class_names"]]
        bb: dict[str, Any] = dict(meta["backbone"])
        widths = int(bb["text_width"]), int(bb["vision_width"]), int(bb["embed_dim"])
    except ConfigError as exc:
        raise CheckpointError(f"{source}: invalid adapter config: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {CONFIG_FILE} lacks or mangles field {exc}") from exc
    if backbone is not None and bb.get("weights_hash") != backbone.weights_hash:
        raise BackboneMismatchError(
            f"{source} was trained on backbone {bb.get('name')!r} (pretrained {bb.get('pretrained')!r}, weights "
            f"{str(bb.get('weights_hash'))[:12]}) but the loaded backbone is {backbone.name!r} (pretrained "
            f"{backbone.pretrained!r}, weights {backbone.weights_hash[:12]}); load it with the backbone it was trained on")
    try:
        tensors = st_load(raw_weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{source}: {WEIGHTS_FILE} is not a valid safetensors file ({exc})") from exc
    prompts = LowRankPrompts(config, widths[0], widths[1])
    expected = {f"prompts.{k}": tuple(v.shape) for k, v in prompts.state_dict().items()}
    expected["class_features"] = (len(class_names), widths[2])
    optional = {"image_drift": (widths[2],)}
    for name, shape in {**expected, **optional}.items():
        if name not in tensors:
            if name in optional:
                continue
            raise CheckpointError(f"{source}: tensor {name!r} is missing")
        t = tensors[name]
        if t.dtype != torch.float32 or tuple(t.shape) != shape:
            raise CheckpointError(f"{source}: tensor {name!r} is {t.dtype} {tuple(t.shape)}, expected torch.float32 {shape}")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: tensor {name!r} holds NaN or infinite values")
    extra = sorted(set(tensors) - set(expected) - set(optional))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]!r}")
    prompts.load_state_dict({k[len('prompts.'):]: v for k, v in tensors.items() if k.startswith("prompts.")})
    prompts.requires_grad_(False)
    return Adapter(config=config, class_names=class_names, prompts=prompts,
                   class_features=tensors["class_features"], image_drift=tensors.get("image_drift"),
                   backbone=bb, metrics=dict(meta.get("metrics") or {}), train_config=meta.get("train_config"))


def zip_bytes(adapter: Adapter) -> bytes:
    """The checkpoint as an in-memory zip (what ``GET /adaptations/{id}/checkpoint`` serves)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in adapter_files(adapter).items():
            zf.writestr(name, data)
    return buf.getvalue()
