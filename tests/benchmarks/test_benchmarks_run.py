"""Benchmarks are not tests: these only check that each module runs with tiny settings and prints
one JSON object with its keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "inference": (["--backbone", "mmlop-tiny", "--batch", "4", "--adapters", "2", "--repeats", "1", "--device", "cpu"],
                  {"raw_ips", "single_ips", "mixed_ips", "naive_ips", "mixed_over_raw", "mixed_over_naive",
                   "device", "dtype"}),
    "training": (["--backbone", "mmlop-tiny", "--presets", "mmlop", "ivlp", "--shots", "1", "--classes", "2",
                  "--epochs", "1", "--device", "cpu"],
                 {"presets", "trim_speedup", "text_full_s", "text_trimmed_s"}),
    "http": (["--clients", "2", "--adapters", "2", "--duration", "1", "--classes", "3"],
             {"batched_rps", "unbatched_rps", "batched_p50_s", "batched_p99_s", "unbatched_p50_s",
              "unbatched_p99_s", "errors", "mixed_over_unbatched"}),
    "open_vocab": (["--backbone", "mmlop-tiny", "--names", "4", "--texts-per-step", "64", "--repeats", "1",
                    "--device", "cpu"],
                   {"b_alone_s", "b_during_a_stepped_s", "b_during_a_one_step_s", "a_stepped_s", "a_one_step_s",
                    "stepped_over_alone", "one_step_over_alone"}),
    "adapters": (["--backbone", "mmlop-tiny", "--stored", "12", "--cold", "4", "--requests", "4", "--device", "cpu"],
                 {"cold_load_p50_s", "cold_load_p99_s", "resident_bytes_per_adapter", "classify_hot_p50_s",
                  "classify_random_p50_s", "classify_random_p99_s"}),
    "blob_uploads": (["--n", "40", "--workers", "1", "8"], {"n", "size", "runs"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_prints_json(name: str) -> None:
    args, keys = CASES[name]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args, "--json"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]
    res = json.loads(lines[0])
    assert keys <= set(res), sorted(keys - set(res))
    if name == "http":
        assert res["errors"] == 0, res
    if name == "blob_uploads":  # both stores (S3 on a moto_server it starts), nothing left
        assert [(r["store"], r["workers"], r["stored"], r["left"]) for r in res["runs"]] == [
            (store, w, 40, 0) for store in ("s3", "file") for w in (1, 8)], res


def test_adapters_benchmark_with_s3_reports_both_stores() -> None:
    """``--store s3``: filesystem and S3 cold loads in one run, the S3 ones from a moto_server the
    benchmark starts on 127.0.0.1 (no AWS_ENDPOINT_URL in its environment)."""
    args = [*CASES["adapters"][0], "--store", "s3", "--json"]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.adapters", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]
    res = json.loads(lines[0])
    for key in ("cold_load_p50_s", "cold_load_p99_s", "s3_cold_load_p50_s", "s3_cold_load_p99_s",
                "s3_fetch_p50_s", "s3_fetch_p99_s"):
        assert res[key] > 0, key
    assert res["s3_cold"] == 4 and res["s3_endpoint"].startswith("moto_server http://127.0.0.1:")
    # A cold load from S3 includes its download.
    assert res["s3_cold_load_p50_s"] >= res["s3_fetch_p50_s"]
