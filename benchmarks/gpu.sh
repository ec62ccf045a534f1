#!/usr/bin/env bash
# All serving and training benchmarks on one GPU with ViT-B-16 in bf16, within 8 minutes
# (each step has its own time limit; the sum is 450 s plus start-up).
#
# Usage:  benchmarks/gpu.sh [OUT]
#   OUT   folder for one JSON file per benchmark (default: a new temp dir); env OUT
# Env overrides: PRETRAINED (none: seeded random init; 'openai' or a checkpoint file for real
# weights; timings do not depend on the weights), DEVICE (cuda), PYTHON (.venv/bin/python, else
# python3), HTTP_SECONDS (20 per mode).
# Prints each benchmark's table; a step that fails or runs past its limit is reported and the
# script goes on (exit status: the number of failed steps).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT=${1:-${OUT:-$(mktemp -d -t mmlop-gpu-bench.XXXXXX)}}
mkdir -p "$OUT"
PRETRAINED=${PRETRAINED:-none}
DEVICE=${DEVICE:-cuda}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
failed=0
start=$(date +%s)

step() {  # step NAME LIMIT_S ARGS...
    local name=$1 limit=$2
    shift 2
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    if timeout --signal=INT --kill-after=15 "$limit" "$PYTHON" -m "benchmarks.$name" "$@" --json \
            >"$OUT/$name.json" 2>"$OUT/$name.log"; then
        "$PYTHON" - "$OUT/$name.json" <<'PY'
import json, sys
res = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
def show(prefix, obj):
    for k, v in obj.items():
        if isinstance(v, dict):
            show(f"{prefix}{k}.", v)
        else:
            print(f"  {prefix + k:<34} {v:.4g}" if isinstance(v, float) else f"  {prefix + k:<34} {v}")
show("", res)
PY
    else
        echo "  FAILED (status $?); see $OUT/$name.log"; tail -5 "$OUT/$name.log"
        failed=$((failed + 1))
    fi
    echo "  ($(( $(date +%s) - t0 )) s)"
}

step inference 90 --backbone ViT-B-16 --pretrained "$PRETRAINED" --device "$DEVICE" --dtype bf16 \
    --batch 32 --adapters 32 --repeats 20
step training 150 --backbone ViT-B-16 --pretrained "$PRETRAINED" --device "$DEVICE"
step http 120 --backbone ViT-B-16 --pretrained "$PRETRAINED" --device "$DEVICE" --precision bf16 \
    --clients 32 --adapters 32 --duration "${HTTP_SECONDS:-20}"
step adapters 90 --backbone ViT-B-16 --pretrained "$PRETRAINED" --device "$DEVICE" --stored 10000 \
    --cold 500 --requests 300

echo "gpu.sh: failed=$failed wall_seconds=$(( $(date +%s) - start )) out=$OUT"
exit $failed
