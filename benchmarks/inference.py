"""Inference throughput: bare CLIP image encoder vs our predictor with one, many, or naive adapters.

    python -m benchmarks.inference [--backbone ViT-B-16] [--pretrained none] [--batch 32]
                                   [--adapters 32] [--classes 10] [--repeats 5] [--dtype fp32|bf16] [--json]

All four variants are timed in one process on the same pixels, `repeats` times each after a
warm-up, interleaved round by round; figures are medians:
  raw_ips     open_clip ``encode_image`` alone (the limit)
  single_ips  our prompted forward + scoring, every image for one adapter
  mixed_ips   one batch mixing `adapters` adapters (per-row prompts, per-row class features)
  naive_ips   one prompted forward per adapter over its own slice of the batch
Adapters have random prompts of the `mmlop` preset (timing does not depend on their values).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

import mmlop_core as m
from mmlop_core.adapter import Adapter
from mmlop_core.trainer import build_prompts


def _adapters(backbone: m.Backbone, count: int, classes: int) -> list[Adapter]:
    out = []
    gen = torch.Generator().manual_seed(0)
    for i in range(count):
        torch.manual_seed(i)
        prompts = build_prompts(backbone, m.AdapterConfig()).cpu().requires_grad_(False)
        feats = torch.nn.functional.normalize(torch.randn(classes, backbone.embed_dim, generator=gen), dim=-1)
        out.append(Adapter(config=m.AdapterConfig(), class_names=[f"class {i}-{c}" for c in range(classes)],
                           prompts=prompts, class_features=feats, image_drift=None, backbone=backbone.describe()))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(backbone_name: str, pretrained: str, batch: int, n_adapters: int, classes: int, repeats: int,
        dtype: str, device: str) -> dict:
    """Time the four variants; returns images/s medians and ratios."""
    backbone = m.load_backbone(backbone_name, pretrained, device=device)
    dev = backbone.device
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext())
    adapters = _adapters(backbone, n_adapters, classes)
    predictor = m.Predictor(backbone)
    pixels = torch.randn(batch, 3, backbone.image_size, backbone.image_size,
                         generator=torch.Generator().manual_seed(1)).to(dev)
    rows = [adapters[i % n_adapters] for i in range(batch)]
    per_adapter = {id(a): [i for i, r in enumerate(rows) if r is a] for a in adapters}

    def raw():
        backbone.model.encode_image(pixels)

    def single():
        predictor.logits(adapters[0], pixels)

    def mixed():
        predictor.logits_mixed(rows, pixels)

    def naive():
        for a in adapters:
            idx = per_adapter[id(a)]
            if idx:
                predictor.logits(a, pixels[idx])

    variants = {"raw": raw, "single": single, "mixed": mixed, "naive": naive}
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad(), autocast:
        for fn in variants.values():  # warm-up (also fills the predictor's per-adapter cache)
            fn()
        for _ in range(repeats):
            for name, fn in variants.items():
                _sync(dev)
                t0 = time.perf_counter()
                fn()
                _sync(dev)
                times[name].append(time.perf_counter() - t0)
    ips = {f"{k}_ips": batch / statistics.median(v) for k, v in times.items()}
    return {"backbone": backbone_name, "device": str(dev), "dtype": dtype, "batch": batch,
            "adapters": n_adapters, "classes": classes, "repeats": repeats, "threads": torch.get_num_threads(),
            **ips, "mixed_over_raw": ips["mixed_ips"] / ips["raw_ips"],
            "mixed_over_single": ips["mixed_ips"] / ips["single_ips"],
            "mixed_over_naive": ips["mixed_ips"] / ips["naive_ips"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="MMLoP multi-adapter inference benchmark")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    a = parser.parse_args()
    res = run(a.backbone, a.pretrained, a.batch, a.adapters, a.classes, a.repeats, a.dtype, a.device)
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['backbone']} on {res['device']} ({res['dtype']}, {res['threads']} threads), batch {res['batch']}, "
          f"{res['adapters']} adapters x {res['classes']} classes, median of {res['repeats']}")
    for k in ("raw", "single", "mixed", "naive"):
        print(f"  {k:<7} {res[k + '_ips']:10.1f} images/s")
    print(f"  mixed/raw {res['mixed_over_raw']:.3f}  mixed/single {res['mixed_over_single']:.3f}  "
          f"mixed/naive {res['mixed_over_naive']:.2f}")


if __name__ == "__main__":
    main()
