"""Training speed: seconds per step and images/s for presets, and the text-context trim speedup.

    python -m benchmarks.training [--backbone mmlop-tiny] [--pretrained none] [--presets mmlop ivlp]
                                  [--shots 16] [--classes 10] [--epochs 10] [--json]

Trains on the committed Fashion-MNIST photos (16 shots x 10 classes by default) once per preset
and reports wall time of the whole run (including the frozen template-ensemble features),
seconds per optimizer step and images/s. `trim_speedup` is the median time of one prompted text
forward over the full 77-token context divided by the same forward trimmed to the longest class
prompt (features identical; see tests/mmlop_core/test_encoders.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import mmlop_core as m
from mmlop_core.encoders import encode_text, placeholder_texts, trim_context

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "fashion_mnist" / "train"
TYPICAL_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def trim_speedup(backbone: m.Backbone, repeats: int = 5) -> dict:
    """Median seconds of a prompted text forward at full context vs trimmed, and their ratio."""
    config = m.AdapterConfig()
    prompts = m.trainer.build_prompts(backbone, config).text_prompts().detach()
    full = backbone.tokenizer(placeholder_texts(TYPICAL_NAMES, config.n_ctx)).to(backbone.device)
    short = trim_context(full)
    with torch.no_grad():
        t_full = _median_time(lambda: encode_text(backbone.model, full, prompts), repeats)
        t_short = _median_time(lambda: encode_text(backbone.model, short, prompts), repeats)
    return {"text_full_s": t_full, "text_trimmed_s": t_short, "trimmed_tokens": int(short.shape[1]),
            "context_tokens": int(full.shape[1]), "trim_speedup": t_full / t_short}


def run(backbone_name: str, pretrained: str, presets: list[str], shots: int, classes: int, epochs: int,
        device: str) -> dict:
    """Train each preset once; return the figures as a dict."""
    backbone = m.load_backbone(backbone_name, pretrained, device=device)
    images, labels, names = m.load_class_folders(FIXTURES)
    keep = [i for i, y in enumerate(labels) if y < classes]
    images, labels, names = [images[i] for i in keep], [labels[i] for i in keep], names[:classes]
    out: dict = {"backbone": backbone_name, "device": str(backbone.device), "threads": torch.get_num_threads(),
                 "shots": shots, "classes": classes, "epochs": epochs, "presets": {}}
    for preset in presets:
        train = m.TrainConfig(shots=shots, epochs=epochs, seed=1)
        t0 = time.perf_counter()
        adapter = m.train_adapter(backbone, images, labels, names, m.AdapterConfig.from_preset(preset), train)
        wall = time.perf_counter() - t0
        steps = adapter.metrics["steps"]
        out["presets"][preset] = {"wall_s": wall, "steps": steps, "s_per_step": adapter.metrics["seconds"] / max(steps, 1),
                                  "images_per_s": adapter.metrics["images_per_s"],
                                  "trainable_parameters": adapter.trainable_parameters}
    out.update(trim_speedup(backbone))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="MMLoP training speed benchmark")
    parser.add_argument("--backbone", default=m.TINY_MODEL)
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--presets", nargs="+", default=["mmlop", "ivlp"])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    res = run(args.backbone, args.pretrained, args.presets, args.shots, args.classes, args.epochs, args.device)
    if args.json:
        print(json.dumps(res))
        return
    print(f"backbone {res['backbone']} on {res['device']} ({res['threads']} threads), "
          f"{res['shots']} shots x {res['classes']} classes x {res['epochs']} epochs")
    print(f"{'preset':<12}{'wall s':>9}{'steps':>7}{'s/step':>9}{'img/s':>9}{'params':>9}")
    for name, r in res["presets"].items():
        print(f"{name:<12}{r['wall_s']:>9.1f}{r['steps']:>7}{r['s_per_step']:>9.4f}{r['images_per_s']:>9.1f}"
              f"{r['trainable_parameters']:>9}")
    print(f"text forward: full {res['context_tokens']} tokens {res['text_full_s'] * 1e3:.2f} ms, trimmed "
          f"{res['trimmed_tokens']} tokens {res['text_trimmed_s'] * 1e3:.2f} ms, trim_speedup {res['trim_speedup']:.2f}x")


if __name__ == "__main__":
    main()
