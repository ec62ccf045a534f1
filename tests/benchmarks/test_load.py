"""Smoke run of ``python -m benchmarks.load`` (the full 60 s run is a benchmark, not a test):
a few concurrent classify clients plus one adaptation, zero 5xx, no lost job, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_load_smoke():
    done = subprocess.run([sys.executable, "-m", "benchmarks.load", "--clients", "6",
                           "--adapters", "3", "--adaptations", "1", "--duration", "6", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, (out, done.stderr[-2000:])
    assert out["server_errors"] == 0 and out["jobs_lost"] == 0 and out["jobs_succeeded"] == 1
    assert out["requests"] > 6 and out["statuses"].get("200", 0) == out["requests"]
    assert out["latency_p50_s"] <= out["latency_p99_s"] and out["memory_ok"]
