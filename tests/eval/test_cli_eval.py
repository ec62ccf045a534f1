"""Every ``mmlop eval`` command end to end on tiny CoOp-layout data (mmlop-tiny, random weights)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CLASSES, TEST_PER_CLASS, TINY, folder_name
from typer.testing import CliRunner

import mmlop_core.eval.runner as runner
from service.console import app
from mmlop_core import sample_few_shot
from mmlop_core.eval import harmonic_mean, load_dataset
from mmlop_core.eval.published import BASE2NOVEL


def run(*args: str, expect: int = 0):
    result = CliRunner().invoke(app, ["eval", *args, *TINY])
    if result.exit_code != expect:
        raise AssertionError(f"exit {result.exit_code} != {expect}\n{result.output}\n{result.exception!r}")
    return result


def forbid_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any training or backbone load fail: a resumed run must need neither."""
    def boom(*a, **k):
        raise AssertionError("recomputed a stored cell")
    monkeypatch.setattr(runner, "train_adapter", boom)
    monkeypatch.setattr(runner, "load_backbone", boom)


def cell_files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("*.json")}


def test_base2novel_end_to_end_then_resume(coop_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    common = ["--data-root", str(coop_root), "--datasets", "eurosat,dtd", "--shots", "2", "--epochs", "1",
              "--out", str(out)]
    res = run("base2novel", *common, "--seeds", "1", "2")
    assert "cells: 4 computed, 0 reused" in res.output
    report = json.loads((out / "base2novel-mmlop.json").read_text())
    cells = {(c["dataset"], c["seed"]): c for c in report["results"]["mmlop"]["cells"]}
    # Base/novel split: EuroSAT 10 classes -> 5 + 5; DTD 7 classes -> ceil(7/2) = 4 + 3.
    for key, (n_base, n_novel) in {"eurosat": (5, 5), "dtd": (4, 3)}.items():
        for seed in (1, 2):
            c = cells[(key, seed)]
            assert (c["base_classes"], c["novel_classes"]) == (n_base, n_novel)
            assert (c["test_base_images"], c["test_novel_images"]) == (n_base * TEST_PER_CLASS, n_novel * TEST_PER_CLASS)
            assert c["train_images"] == 2 * n_base and c["hm"] == pytest.approx(harmonic_mean(c["base"], c["novel"]))
            assert 0 <= c["base"] <= 100 and 0 <= c["novel"] <= 100
    # Few-shot sampling per seed: sample_few_shot over the full train split, then the base half.
    ds = load_dataset("eurosat", coop_root)
    for seed in (1, 2):
        idx = sample_few_shot([s.label for s in ds.train], 2, seed)
        expected = [str(Path(ds.train[i].path).relative_to(coop_root)) for i in idx if ds.train[i].label < 5]
        assert cells[("eurosat", seed)]["train_files"] == expected
    assert cells[("eurosat", 1)]["train_files"] != cells[("eurosat", 2)]["train_files"]
    # The saved adapter knows only the base class names.
    saved = json.loads((out / "adapters/base2novel/mmlop/dtd/shots2-seed1/adapter_config.json").read_text())
    assert [folder_name(c).replace("_", " ") for c in CLASSES[:4]] == saved["class_names"]
    # Average row: mean B and mean N over datasets, then HM of those (hand-computed from the cells).
    b = {k: (cells[(k, 1)]["base"] + cells[(k, 2)]["base"]) / 2 for k in ("eurosat", "dtd")}
    n = {k: (cells[(k, 1)]["novel"] + cells[(k, 2)]["novel"]) / 2 for k in ("eurosat", "dtd")}
    avg = report["results"]["mmlop"]["average"]
    assert avg["base"] == pytest.approx(sum(b.values()) / 2) and avg["novel"] == pytest.approx(sum(n.values()) / 2)
    assert avg["hm"] == pytest.approx(2 * avg["base"] * avg["novel"] / (avg["base"] + avg["novel"]))
    md = (out / "base2novel-mmlop.md").read_text()
    assert "| PromptSRC | 46K | 84.26 | 76.10 | 79.97 |" in md and "| MMLoP | 11.5K | — | — | 79.70 |" in md
    assert f"**Ours (mmlop)** | 2.3K | {avg['base']:.2f}" in md and "EuroSAT" in md and "not directly comparable" in md
    assert len(BASE2NOVEL) == 8

    # Resume: nothing is trained, the backbone is not even loaded, no cell file is rewritten.
    before = cell_files(out)
    with monkeypatch.context() as m:
        forbid_work(m)
        res = run("base2novel", *common, "--seeds", "1,2")
    assert "cells: 0 computed, 4 reused" in res.output and cell_files(out) == before
    # Other settings for one dataset: only those cells are recomputed.
    res = run("base2novel", *[a if a != "eurosat,dtd" else "dtd" for a in common], "--seeds", "1", "--epochs", "2")
    assert "cells: 1 computed, 0 reused" in res.output


def test_fewshot_end_to_end(coop_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    args = ["fewshot", "--data-root", str(coop_root), "--datasets", "eurosat", "--seeds", "1", "--shots", "1", "2",
            "--epochs", "1", "--out", str(out)]
    res = run(*args)
    assert "cells: 2 computed, 0 reused" in res.output
    report = json.loads((out / "fewshot-mmlop.json").read_text())
    for k in ("1", "2"):
        (cell,) = report["results"][k]["cells"]
        assert cell["train_images"] == int(k) * 10 and cell["test_images"] == 10 * TEST_PER_CLASS
        assert cell["classes"] == 10
    md = (out / "fewshot-mmlop.md").read_text()
    assert "| EuroSAT |" in md and "MMLoP (published) | — | — |" in md
    with monkeypatch.context() as m:
        forbid_work(m)
        assert "cells: 0 computed, 2 reused" in run(*args).output


def test_xd_end_to_end_and_partial_resume(coop_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "out"
    args = ["xd", "--data-root", str(coop_root), "--seeds", "1", "--shots", "1", "--epochs", "1", "--out", str(out)]
    res = run(*args)
    assert "cells: 5 computed, 0 reused" in res.output
    report = json.loads((out / "xd-mmlop.json").read_text())
    cells = {c["dataset"]: c for c in report["results"]["cells"]}
    assert cells["imagenet"]["role"] == "source" and cells["imagenet"]["train_images"] == 6
    assert cells["imagenetv2"]["classes"] == 6 and cells["imagenet_a"]["classes"] == 3  # A/R: own class subset
    tgt = report["results"]["targets"]
    assert tgt["average"]["accuracy"] == pytest.approx(
        sum(cells[t]["accuracy"] for t in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")) / 4)
    assert "| MMLoP (published) | — | — | — | — | — | 60.46 |" in (out / "xd-mmlop.md").read_text()
    # A lost target cell is recomputed from the saved ImageNet adapter, without retraining.
    lost = out / "cells/xd/mmlop/imagenet_r/shots1-seed1.json"
    old_acc = json.loads(lost.read_text())["accuracy"]
    lost.unlink()
    with monkeypatch.context() as m:
        m.setattr(runner, "train_adapter", lambda *a, **k: pytest.fail("retrained the source adapter"))
        res = run(*args)
    assert "cells: 1 computed, 4 reused" in res.output
    assert json.loads(lost.read_text())["accuracy"] == pytest.approx(old_acc)


def test_ablation_shares_base2novel_cells(coop_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    common = ["--data-root", str(coop_root), "--datasets", "dtd", "--seeds", "1", "--shots", "1", "--epochs", "1",
              "--out", str(out)]
    run("base2novel", *common)
    res = run("ablation", *common, "--presets", "mmlop", "mmlop-noudc", "zeroshot")
    assert "cells: 2 computed, 1 reused" in res.output
    report = json.loads((out / "ablation.json").read_text())
    assert list(report["results"]) == ["mmlop", "mmlop-noudc", "zeroshot"]
    assert report["results"]["zeroshot"]["trainable_parameters"] == 0
    md = (out / "ablation.md").read_text()
    assert "| `mmlop-noudc` |" in md and "| IVLP (published) | 46K | 84.21 | 71.79 | 77.51 |" in md
    res = run("ablation", *common, "--presets", "mmlop,nonsense", expect=2)
    assert "preset='nonsense' is unknown" in res.output


def test_missing_dataset_files_give_one_line_errors(coop_root: Path, tmp_path: Path):
    args = ["base2novel", "--data-root", str(coop_root), "--datasets", "eurosat", "--seeds", "1", "--shots", "1",
            "--epochs", "1", "--out", str(tmp_path / "out")]
    (coop_root / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    res = run(*args, expect=2)
    assert "error: split file" in res.output and "split_zhou_EuroSAT.json' is missing" in res.output
    assert "Traceback" not in res.output
    res = run("fewshot", "--data-root", str(tmp_path / "nowhere"), "--datasets", "dtd", "--seeds", "1", expect=2)
    assert "dataset folder" in res.output and "nowhere/dtd" in res.output


def test_progress_written_to_a_file_is_one_line_per_cell(coop_root: Path, tmp_path: Path):
    """Issue 12 D.17's kind, on ``mmlop eval``: with stderr in a file (not a terminal) and no
    ``--quiet``, no tqdm carriage-return updates are written, and each finished cell logs one line."""
    import subprocess
    import sys

    mmlop = Path(sys.executable).parent / "mmlop"
    args = [str(mmlop), "eval", "base2novel", "--data-root", str(coop_root), "--datasets", "dtd", "--seeds", "1",
            "--shots", "1", "--epochs", "1", "--out", str(tmp_path / "out"),
            *[a for a in TINY if a != "--quiet"]]
    with open(tmp_path / "eval.log", "w") as log:
        proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    text = (tmp_path / "eval.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text, text[:2000]
    assert len([line for line in text.splitlines() if "base2novel dtd mmlop seed 1: base" in line]) == 1, text
