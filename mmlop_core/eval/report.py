"""Markdown tables and JSON files of the evaluation results, beside the published numbers.

Accuracies are in percent with two decimals; ``a ± s`` is the mean and population std over
seeds. Published rows come from :mod:`mmlop_core.eval.published` (docs/METHOD.md section 7).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import published
from .datasets import BASE_TO_NOVEL_DATASETS, IMAGENET_VARIANTS
from .store import write_json_atomic, write_text_atomic

DISPLAY = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
    "oxford_flowers": "Flowers102", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397",
    "dtd": "DTD", "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenetv2": "ImageNet-V2",
    "imagenet_sketch": "ImageNet-Sketch", "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R",
    "fmnist": "FashionMNIST", "fmnist-sketch": "FMNIST-Sketch", "fmnist-negative": "FMNIST-Negative",
    "fmnist-blur": "FMNIST-Blur", "fmnist-v2": "FMNIST-V2",
}


def _f(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f} ± {std:.2f}"


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}K" if n >= 1e3 else str(n))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _coverage_note(datasets: list[str], full: tuple[str, ...]) -> str:
    if set(datasets) == set(full):
        return ""
    return (f"\n\n**Note:** our average covers {len(datasets)} of the {len(full)} datasets "
            f"({', '.join(DISPLAY[d] for d in datasets)}), so it is not directly comparable with the published "
            f"averages.")


def _meta_line(meta: dict[str, Any]) -> str:
    return (f"Backbone `{meta['backbone']}` (`{meta['pretrained']}`), {meta['shots']} shots, seeds "
            f"{', '.join(map(str, meta['seeds']))}, {meta['epochs']} epochs.")


def base2novel_markdown(results: dict[str, dict], meta: dict[str, Any]) -> str:
    """Per-dataset table per preset, then the 11-dataset averages beside the published methods."""
    parts = [f"# Base-to-novel generalisation\n\n{_meta_line(meta)} Base = first ceil(C/2) classes, novel = the "
             f"rest; HM = 2BN/(B+N) of the mean B and N (docs/METHOD.md section 7)."]
    datasets = meta["datasets"]
    for preset, res in results.items():
        rows = [[DISPLAY[d], _pm(r["base"], r["base_std"]), _pm(r["novel"], r["novel_std"]), _f(r["hm"])]
                for d, r in res["datasets"].items()]
        avg = res["average"]
        rows.append(["**Average**", _f(avg["base"]), _f(avg["novel"]), f"**{_f(avg['hm'])}**"])
        parts.append(f"## Ours: `{preset}` ({_params(res['trainable_parameters'])} trainable parameters)\n\n"
                     + _table(["Dataset", "Base", "Novel", "HM"], rows))
    rows = [[name, p, _f(b), _f(n), _f(h)] for name, (b, n, h, p) in published.BASE2NOVEL.items()]
    for preset, res in results.items():
        avg = res["average"]
        rows.append([f"**Ours ({preset})**", _params(res["trainable_parameters"]), _f(avg["base"]), _f(avg["novel"]),
                     f"**{_f(avg['hm'])}**"])
    parts.append("## Average over datasets vs published (ViT-B/16, 16 shots, 3 seeds)\n\n"
                 + _table(["Method", "Params", "Base", "Novel", "HM"], rows)
                 + f"\n\nPublished: docs/METHOD.md section 7; MMLoP's abstract gives its HM only (and novel "
                   f"+{published.MMLOP_NOVEL_GAIN_OVER_IVLP} over IVLP)."
                 + _coverage_note(datasets, BASE_TO_NOVEL_DATASETS))
    return "\n\n".join(parts) + "\n"


def ablation_markdown(results: dict[str, dict], meta: dict[str, Any]) -> str:
    """One row per preset: averaged B, N, HM, the novel gain over `ivlp` and per-dataset HM."""
    datasets = meta["datasets"]
    ref = results.get("ivlp", {}).get("average", {}).get("novel")
    header = ["Preset", "Params", "Base", "Novel", "HM", "ΔNovel vs ivlp"] + [DISPLAY[d] + " HM" for d in datasets]
    rows = []
    for preset, res in results.items():
        avg = res["average"]
        gain = "—" if ref is None else f"{avg['novel'] - ref:+.2f}"
        rows.append([f"`{preset}`", _params(res["trainable_parameters"]), _f(avg["base"]), _f(avg["novel"]),
                     _f(avg["hm"]), gain] + [_f(res["datasets"][d]["hm"]) for d in datasets])
    b, n, h, p = published.BASE2NOVEL["IVLP"]
    pub = [["IVLP (published)", p, _f(b), _f(n), _f(h), "—"] + ["—"] * len(datasets),
           ["MMLoP (published)", "11.5K", "—", "—", _f(published.BASE2NOVEL["MMLoP"][2]),
            f"+{published.MMLOP_NOVEL_GAIN_OVER_IVLP:.2f}"] + ["—"] * len(datasets)]
    return (f"# Ablation (base-to-novel)\n\n{_meta_line(meta)} `mmlop` is the full model; each other MMLoP preset "
            f"turns one component off (`-fullrank`: no low-rank factorisation, `-nolscl`: no consistency loss, "
            f"`-noudc`: no drift correction, `-noshare`: no shared U); `ivlp` turns all off.\n\n"
            + _table(header, rows + pub) + _coverage_note(datasets, BASE_TO_NOVEL_DATASETS) + "\n")


def fewshot_markdown(results: dict[int, dict], meta: dict[str, Any]) -> str:
    """Datasets x shots table (mean ± std over seeds), average row, published MMLoP row."""
    shots = list(results)
    datasets = meta["datasets"]
    rows = [[DISPLAY[d]] + [_pm(results[k]["datasets"][d]["accuracy"], results[k]["datasets"][d]["std"])
                            for k in shots] for d in datasets]
    rows.append([f"**Average ({meta['preset']})**"] + [f"**{_f(results[k]['average']['accuracy'])}**" for k in shots])
    rows.append(["MMLoP (published)"] + [_f(published.FEWSHOT_MMLOP.get(k)) for k in shots])
    meta = {**meta, "shots": "/".join(map(str, shots))}
    return (f"# All-class few-shot classification\n\n{_meta_line(meta)} Train on k shots of every class, test on "
            f"the full test split.\n\n" + _table(["Dataset"] + [f"{k} shots" for k in shots], rows)
            + _coverage_note(datasets, BASE_TO_NOVEL_DATASETS) + "\n")


def xd_markdown(result: dict, meta: dict[str, Any]) -> str:
    """Source accuracy, each target, and the mean over targets beside MMLoP's published mean."""
    (src_key, src), = result["source"]["datasets"].items()
    targets = result["targets"]["datasets"]
    header = [f"{DISPLAY[src_key]} (source)"] + [DISPLAY[t] for t in targets] + ["Target mean"]
    ours = [_pm(src["accuracy"], src["std"])] + [_pm(r["accuracy"], r["std"]) for r in targets.values()] \
        + [f"**{_f(result['targets']['average']['accuracy'])}**"]
    pub = ["—"] * (1 + len(targets)) + [_f(published.XD_MMLOP_MEAN)]
    note = "" if set(targets) == set(IMAGENET_VARIANTS) else "\n\n**Note:** not all four ImageNet variants were evaluated."
    return (f"# Domain generalisation\n\n{_meta_line(meta)} Trained on all {DISPLAY[src_key]} classes, tested on "
            f"each variant with its own class names.\n\n"
            + _table(["Method"] + header, [[f"**Ours ({meta['preset']})**"] + ours, ["MMLoP (published)"] + pub])
            + note + "\n")


def write_report(out: Path, stem: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``OUT/<stem>.json`` and ``OUT/<stem>.md`` atomically; returns both paths."""
    json_path, md_path = Path(out) / f"{stem}.json", Path(out) / f"{stem}.md"
    write_json_atomic(json_path, data)
    write_text_atomic(md_path, markdown)
    return json_path, md_path


__all__ = ["DISPLAY", "ablation_markdown", "base2novel_markdown", "fewshot_markdown",
           "write_report", "xd_markdown"]
