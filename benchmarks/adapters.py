"""Adapter store and cache benchmark: cold-load latency, resident bytes, classify with many adapters stored.

    python -m benchmarks.adapters [--backbone ViT-B-16] [--pretrained none] [--stored 10000]
                                  [--classes 10] [--cold 200] [--requests 100] [--json]
                                  [--store file|s3] [--s3-url s3://bucket/prefix]

Writes `stored` checkpoints (one random `mmlop` adapter's two files, written to `stored`
directories; load time does not depend on the values) into a temp store, then, in one
:class:`api.engine.InferenceEngine` on the backbone:
  cold_load   ``AdapterCache.get`` of `cold` distinct adapters never loaded before (read the
              files, validate, build the prompts, move to the device): p50/p99 seconds
  resident    cache bytes per cached adapter (low-rank prompt factors + class features (C, D) fp32)
  classify    one-image requests, one at a time: to one cached adapter (hot) and to adapters drawn
              uniformly from all `stored` (mostly misses unless the byte budget holds them all):
              p50/p99 seconds, and the hit rate of the random run
  s3_cold_load  with ``--store s3``, in the same run after the figures above: `cold` more adapters
              uploaded to the S3 blob store and loaded as the API does (download into the read
              cache + load): p50/p99 seconds, and the download alone (s3_fetch). The server is
              AWS_ENDPOINT_URL's, or a moto_server started on 127.0.0.1 (benchmarks/adapters_s3.py).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

import mmlop_core as m
from api.engine import InferenceEngine
from benchmarks.adapters_s3 import s3_cold_loads, s3_server
from benchmarks.common import percentile, random_adapter, sample_images, write_checkpoint
from mmlop_core.checkpoint import adapter_files

logger = logging.getLogger(__name__)


def run(backbone_name: str, pretrained: str, stored: int, classes: int, cold: int, requests: int, device: str,
        cache_bytes: int = 256 << 20, store: str = "file", s3_url: str | None = None) -> dict:
    """Populate the store, time cold loads and classify (and S3 cold loads with ``store="s3"``);
    returns the figures as a dict."""
    backbone = m.load_backbone(backbone_name, pretrained, device=device)
    files = adapter_files(random_adapter(backbone, 0, classes))
    pixels = torch.stack([backbone.preprocess(m.open_image(b)) for b in sample_images(1)])  # (1, 3, H, W)
    with tempfile.TemporaryDirectory(prefix="mmlop-bench-adapters-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        dirs = {f"adapter-{i:05d}": root / f"adapter-{i:05d}" for i in range(stored)}
        for d in dirs.values():
            write_checkpoint(files, d)
        write_s = time.perf_counter() - t0
        engine = InferenceEngine(backbone, max_batch_images=32, max_wait_ms=0, cache_bytes=cache_bytes)
        ids = list(dirs)
        rng = random.Random(0)

        async def bench(s3: str | None) -> dict:
            cold_s = []
            for aid in ids[:cold]:
                t = time.perf_counter()
                await engine.cache.get(aid, dirs[aid])
                cold_s.append(time.perf_counter() - t)
            resident = engine.cache.bytes / max(engine.cache.adapters, 1)
            hot_s = []
            for _ in range(max(requests // 4, 5)):
                t = time.perf_counter()
                await engine.classify(ids[0], dirs[ids[0]], pixels, 1)
                hot_s.append(time.perf_counter() - t)
            stats = engine.cache.stats
            hits0, misses0 = stats.hits, stats.misses
            rand_s = []
            for _ in range(requests):
                aid = rng.choice(ids)
                t = time.perf_counter()
                await engine.classify(aid, dirs[aid], pixels, 1)
                rand_s.append(time.perf_counter() - t)
            hits, misses = stats.hits - hits0, stats.misses - misses0
            s3_res = {} if s3 is None else await s3_cold_loads(engine, files, min(cold, stored), s3,
                                                                 root / "s3-cache")
            await engine.stop()
            return {"cold_load_p50_s": percentile(cold_s, 0.5), "cold_load_p99_s": percentile(cold_s, 0.99),
                    "resident_bytes_per_adapter": resident,
                    "classify_hot_p50_s": percentile(hot_s, 0.5), "classify_hot_p99_s": percentile(hot_s, 0.99),
                    "classify_random_p50_s": percentile(rand_s, 0.5), "classify_random_p99_s": percentile(rand_s, 0.99),
                    "random_hit_rate": hits / max(hits + misses, 1), "cached_adapters": engine.cache.adapters,
                    "cache_bytes": engine.cache.bytes, "evictions": stats.evictions, **s3_res}

        with s3_server(s3_url) if store == "s3" else nullcontext((None, None)) as (url, endpoint):
            res = asyncio.run(bench(url))
        if endpoint:
            res["s3_endpoint"] = endpoint
    return {"backbone": backbone_name, "device": str(backbone.device), "threads": torch.get_num_threads(),
            "stored": stored, "classes": classes, "checkpoint_bytes": sum(len(v) for v in files.values()),
            "store_write_s": write_s, "cold": min(cold, stored), "requests": requests, "cache_budget_bytes": cache_bytes,
            **res}


def main() -> None:
    parser = argparse.ArgumentParser(description="MMLoP adapter store/cache benchmark")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--stored", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--cold", type=int, default=200, help="distinct cold loads timed")
    parser.add_argument("--requests", type=int, default=100, help="random-adapter classify requests timed")
    parser.add_argument("--cache-bytes", type=int, default=256 << 20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--store", choices=("file", "s3"), default="file",
                        help="s3: also time cold loads from an S3 server, in the same run")
    parser.add_argument("--s3-url", default=None, help="s3://bucket/prefix with AWS_ENDPOINT_URL set "
                        "(default: a fresh bucket on a local moto_server)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    a = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res = run(a.backbone, a.pretrained, a.stored, a.classes, a.cold, a.requests, a.device, a.cache_bytes,
              a.store, a.s3_url)
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['backbone']} on {res['device']} ({res['threads']} threads): {res['stored']} adapters stored "
          f"({res['checkpoint_bytes']} bytes each, {res['classes']} classes), cache budget {res['cache_budget_bytes']} bytes")
    print(f"  cold load      p50 {res['cold_load_p50_s'] * 1e3:8.2f} ms   p99 {res['cold_load_p99_s'] * 1e3:8.2f} ms"
          f"   ({res['cold']} adapters, filesystem)")
    if "s3_cold_load_p50_s" in res:
        print(f"  cold load S3   p50 {res['s3_cold_load_p50_s'] * 1e3:8.2f} ms   p99 {res['s3_cold_load_p99_s'] * 1e3:8.2f} ms"
              f"   ({res['s3_cold']} adapters, {res['s3_endpoint']}; download alone p50 "
              f"{res['s3_fetch_p50_s'] * 1e3:.2f} ms, p99 {res['s3_fetch_p99_s'] * 1e3:.2f} ms)")
    print(f"  resident       {res['resident_bytes_per_adapter']:.0f} bytes per cached adapter")
    print(f"  classify hot   p50 {res['classify_hot_p50_s'] * 1e3:8.2f} ms   p99 {res['classify_hot_p99_s'] * 1e3:8.2f} ms")
    print(f"  classify rand  p50 {res['classify_random_p50_s'] * 1e3:8.2f} ms   p99 {res['classify_random_p99_s'] * 1e3:8.2f} ms"
          f"   (hit rate {res['random_hit_rate']:.2f}, {res['cached_adapters']} cached, {res['evictions']} evictions)")


if __name__ == "__main__":
    main()
