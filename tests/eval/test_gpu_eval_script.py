"""benchmarks/gpu_eval.sh runs (tiny CPU settings here; its figures come from a GPU run)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_eval.sh"


def test_gpu_eval_script_runs_on_tiny_settings(coop_root: Path, tmp_path: Path):
    env = {**os.environ, "BACKBONE": "mmlop-tiny", "DEVICE": "cpu", "PRECISION": "fp32", "EPOCHS": "1",
           "SHOTS": "1", "WORKERS": "0", "EXTRA_ARGS": "--quiet", "OMP_NUM_THREADS": "1",
           "MMLOP": str(Path(sys.executable).with_name("mmlop"))}
    proc = subprocess.run(["bash", str(SCRIPT), "none", str(coop_root), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu_eval: status=0 wall_seconds=" in proc.stdout
    assert "| EuroSAT |" in proc.stdout and "| DTD |" in proc.stdout
    assert (tmp_path / "out" / "base2novel-mmlop.json").is_file()


def test_gpu_eval_script_usage():
    env = {k: v for k, v in os.environ.items() if k not in ("MMLOP_WEIGHTS", "MMLOP_DATA_ROOT")}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr
