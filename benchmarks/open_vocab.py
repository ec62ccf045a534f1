"""Open-vocabulary fairness: does one tenant's long class list hold back another tenant's images?

    python -m benchmarks.open_vocab [--backbone ViT-B-16] [--pretrained none] [--names 300]
                                    [--texts-per-step 256] [--repeats 3] [--device auto] [--json]

Issue 12 A.1's scenario, in one :class:`api.engine.InferenceEngine` (the model thread every
request shares). Tenant A classifies one image against `names` new open-vocabulary class names
(their class features are computed on the model thread, 61 texts per name with text-side UDC);
0.2 s later tenant B classifies one image against its trained classes. Timed, `repeats` times
each, interleaved round by round, with fresh names every round (no cache hits):
  alone      B's request with nothing else running
  stepped    B's request while A's list is computed in steps of `texts_per_step` texts (today)
  one_step   the same with the whole list as one step (the behaviour before issue 12 A.1)
and A's whole request in both modes. Figures are medians in seconds; ratios are against `alone`.
Adapters are untrained `mmlop` adapters (timing does not depend on their values).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mmlop_core as m
from api.engine import InferenceEngine
from benchmarks.common import random_adapter, sample_images


async def _round(engine: InferenceEngine, dirs: dict[str, Path], px: torch.Tensor, names: list[str] | None,
                 delay_s: float) -> tuple[float, float]:
    """(B's latency, A's latency) in seconds; A is skipped (0.0) when `names` is None."""
    async def timed(coro) -> float:
        t0 = time.perf_counter()
        await coro
        return time.perf_counter() - t0

    a = asyncio.ensure_future(timed(engine.classify("a", dirs["a"], px, 1, names))) if names else None
    await asyncio.sleep(delay_s if names else 0.0)
    b = await timed(engine.classify("b", dirs["b"], px, 1))
    return b, (await a if a is not None else 0.0)


def run(backbone_name: str, pretrained: str, n_names: int, texts_per_step: int, repeats: int,
        device: str) -> dict:
    """Time B alone, B during A (stepped and one step), and A; medians and ratios."""
    backbone = m.load_backbone(backbone_name, pretrained, device=device)
    px = torch.stack([backbone.preprocess(m.open_image(sample_images(1)[0]))])
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {k: Path(tmp) / k for k in ("a", "b")}
        for seed, key in enumerate(dirs):
            m.save_adapter(random_adapter(backbone, seed), dirs[key])
        engines = {"stepped": InferenceEngine(backbone, max_wait_ms=1, texts_per_step=texts_per_step),
                   "one_step": InferenceEngine(backbone, max_wait_ms=1, texts_per_step=1 << 30)}
        b_times: dict[str, list[float]] = {"alone": [], "stepped": [], "one_step": []}
        a_times: dict[str, list[float]] = {"stepped": [], "one_step": []}

        async def go() -> None:
            for engine in engines.values():  # warm-up: both adapters loaded, one forward each
                await _round(engine, dirs, px, None, 0.0)
                await engine.classify("a", dirs["a"], px, 1)
            for r in range(repeats):
                b, _ = await _round(engines["stepped"], dirs, px, None, 0.0)
                b_times["alone"].append(b)
                for mode, engine in engines.items():
                    names = [f"{mode} round {r} class {i}" for i in range(n_names)]
                    b, a = await _round(engine, dirs, px, names, 0.2)
                    b_times[mode].append(b)
                    a_times[mode].append(a)
            for engine in engines.values():
                await engine.stop()

        asyncio.run(go())
    med = {k: statistics.median(v) for k, v in b_times.items()}
    return {
        "backbone": backbone_name, "pretrained": pretrained, "device": str(backbone.device),
        "threads": torch.get_num_threads(), "names": n_names, "texts_per_step": texts_per_step, "repeats": repeats,
        "b_alone_s": med["alone"], "b_during_a_stepped_s": med["stepped"], "b_during_a_one_step_s": med["one_step"],
        "a_stepped_s": statistics.median(a_times["stepped"]), "a_one_step_s": statistics.median(a_times["one_step"]),
        "stepped_over_alone": med["stepped"] / med["alone"], "one_step_over_alone": med["one_step"] / med["alone"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="MMLoP open-vocabulary fairness benchmark")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--names", type=int, default=300, help="open-vocabulary class names of tenant A")
    parser.add_argument("--texts-per-step", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    a = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res = run(a.backbone, a.pretrained, a.names, a.texts_per_step, a.repeats, a.device)
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['backbone']} on {res['device']} ({res['threads']} threads): tenant A sends {res['names']} "
          f"open-vocabulary names, tenant B one image; medians of {res['repeats']}")
    print(f"  B alone                         {res['b_alone_s']:8.3f} s")
    print(f"  B during A, {res['texts_per_step']} texts per step  {res['b_during_a_stepped_s']:8.3f} s"
          f"   ({res['stepped_over_alone']:.1f}x alone; A took {res['a_stepped_s']:.1f} s)")
    print(f"  B during A, one step            {res['b_during_a_one_step_s']:8.3f} s"
          f"   ({res['one_step_over_alone']:.1f}x alone; A took {res['a_one_step_s']:.1f} s)")


if __name__ == "__main__":
    main()
