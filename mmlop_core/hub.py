"""Where an open_clip pretrained tag's weights come from, decided before open_clip is asked.

open_clip fetches a tag's weights through ``huggingface_hub`` (or a plain URL) and, when the hub
cannot be reached, retries for about a minute and logs some twenty warnings before it fails
(issue 12 D.15). This module answers the two questions that decide the outcome up front: are
the weights already in the local cache, and can the host that serves them be reached at all?
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

log = logging.getLogger(__name__)

_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's defaults, in its order
_CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsSource:
    """Where a pretrained tag's weights are.

    Attributes:
        host: the host that serves them (the Hugging Face endpoint or the URL's host).
        port: its TCP port.
        cached: path of a complete local copy, or None.
    """

    host: str
    port: int
    cached: str | None


def weights_source(cfg: dict, cache_dir: str | None) -> WeightsSource:
    """The host and any cached copy of the weights described by an open_clip pretrained cfg.

    Mirrors ``open_clip.pretrained.download_pretrained``: the ``hf_hub`` entry (``org/model/``
    for open_clip's default file names, or ``org/model/file``) is preferred, else ``url``
    (cached as its basename under ``cache_dir`` or ``~/.cache/clip``).
    """
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import constants, try_to_load_from_cache

        endpoint = urlparse(constants.ENDPOINT)
        model_id, filename = os.path.split(hub)
        cached = None
        for name in ([filename] if filename else list(_HUB_FILES)):
            path = try_to_load_from_cache(model_id, name, cache_dir=cache_dir)
            if isinstance(path, str) and os.path.isfile(path):
                cached = path
                break
        return WeightsSource(endpoint.hostname or "", _port(endpoint), cached)
    url = urlparse(cfg.get("url", ""))
    path = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url.path))
    return WeightsSource(url.hostname or "", _port(url), path if url.path and os.path.isfile(path) else None)


def _port(url) -> int:  # noqa: ANN001 - urllib's ParseResult
    return url.port or (80 if url.scheme == "http" else 443)


def reachable(host: str, port: int, timeout_s: float = _CONNECT_TIMEOUT_S) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout_s`` seconds (name
    resolution included); one attempt, no retries."""
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError as exc:
        log.info("weights host %s:%d is unreachable: %s", host, port, exc)
        return False
