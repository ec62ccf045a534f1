"""benchmarks/tiny_eval.sh runs end to end on a tiny slice of the mini benchmark and assembles its
table (figures come from the real run, docs/TINY_EVAL.md; this only checks that it runs)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_tiny_eval_script_writes_the_table(tmp_path: Path):
    env = {**os.environ, "DATA_ROOT": str(tmp_path / "data"), "SEEDS": "1", "EPOCHS": "1", "TRAIN_PER_CLASS": "2",
           "TEST_PER_CLASS": "2", "MMLOP": str(Path(sys.executable).with_name("mmlop"))}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "tiny_eval.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = (tmp_path / "out" / "TABLE.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["zeroshot", "coop", "ivlp", "ivlp+lscl", "mmlop", "mmlop-fullrank", "mmlop-nolscl",
                        "mmlop-noudc", "mmlop-noshare"]
    header = table.splitlines()[2]
    assert "fmnist-sketch" in header and "xd target mean" in header and "few-shot" in header
    assert "tiny_eval: base2novel (9 presets) took" in proc.stdout
