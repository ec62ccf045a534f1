"""Assemble docs/TINY_EVAL.md's measured table from the JSON reports of benchmarks/tiny_eval.sh.

Usage: python -m benchmarks._tiny_table OUT_DIR  (prints Markdown on stdout)

Reads ``OUT/ablation.json`` (base-to-novel of every preset), ``OUT/fewshot-<preset>.json`` and
``OUT/xd-<preset>.json`` written by ``mmlop eval``; every figure is the mean +- population std
over the seeds (CoOp's parse_test_res.py), accuracies in %.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

MAIN = ("zeroshot", "coop", "ivlp", "ivlp+lscl", "mmlop")


def _pm(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def table(out: Path) -> str:
    """Markdown table: one row per preset; base/novel/HM, few-shot and xd columns."""
    ablation = _load(out / "ablation.json")
    if ablation is None:
        raise SystemExit(f"{out / 'ablation.json'} is missing; run benchmarks/tiny_eval.sh first")
    b2n = ablation["results"]
    meta = ablation["meta"]
    targets: list[str] = []
    rows = []
    for preset, res in b2n.items():
        d = res["datasets"]["fmnist"]
        cells = [_pm(d["base"], d["base_std"]), _pm(d["novel"], d["novel_std"]),
                 f"{d['hm']:.1f} (± {d['hm_seed_std']:.1f})"]
        few = _load(out / f"fewshot-{preset}.json")
        if few is not None:
            (shots, r), = few["results"].items()
            f = r["datasets"]["fmnist"]
            cells.append(_pm(f["accuracy"], f["std"]))
        else:
            cells.append("")
        xd = _load(out / f"xd-{preset}.json")
        if xd is not None:
            src = xd["results"]["source"]["datasets"]["fmnist"]
            tg = xd["results"]["targets"]["datasets"]
            targets = targets or list(tg)
            cells += [_pm(src["accuracy"], src["std"])] + [_pm(tg[t]["accuracy"], tg[t]["std"]) for t in targets]
            cells.append(f"{xd['results']['targets']['average']['accuracy']:.1f}")
        rows.append((preset, res["trainable_parameters"], cells))
    header = ["preset", "params", "base", "novel", "HM", "few-shot (4 shots, all 10 classes)",
              "xd source (fmnist, 16 shots)", *targets, "xd target mean"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preset, params, cells in rows:
        cells = cells + [""] * (len(header) - 2 - len(cells))
        lines.append(f"| {preset} | {params:,} | " + " | ".join(cells) + " |")
    seeds = ", ".join(str(s) for s in meta["seeds"])
    return (f"Backbone {meta['backbone']}/{meta['pretrained']}, seeds {seeds}, {meta['shots']} shots per base "
            f"class, mean ± std over seeds, accuracy in %.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m benchmarks._tiny_table OUT_DIR")
    sys.stdout.write(table(Path(sys.argv[1])))
