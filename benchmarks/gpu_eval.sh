#!/usr/bin/env bash
# GPU check of the evaluation harness: EuroSAT and DTD base-to-novel, one seed, ViT-B/16, bf16,
# 16 shots, 20 epochs (the paper's setting for one seed of two datasets). Budget: 10 minutes on
# one H200; the run is killed (exit 124) past TIME_LIMIT seconds.
#
# Usage:  benchmarks/gpu_eval.sh WEIGHTS DATA_ROOT [OUT]
#   WEIGHTS    open_clip ViT-B-16 checkpoint file (or an open_clip tag such as 'openai' when
#              its weights are in the open_clip cache); env MMLOP_WEIGHTS
#   DATA_ROOT  CoOp data root holding eurosat/ and dtd/ (docs/REPRODUCE.md); env MMLOP_DATA_ROOT
#   OUT        output directory (default: a new temp dir); env OUT. Cells already in OUT are reused.
# Other env overrides: BACKBONE (ViT-B-16; use ViT-B-16-quickgelu for OpenAI weights given as a
# file), DEVICE (cuda), PRECISION (bf16), EPOCHS (20), SHOTS (16), SEED (1), WORKERS (8),
# TIME_LIMIT (600), MMLOP (the mmlop executable; default .venv/bin/mmlop, else mmlop on PATH).
# Prints the wall time and the Markdown table; figures, not a pass/fail test.
set -euo pipefail

WEIGHTS=${1:-${MMLOP_WEIGHTS:-}}
DATA_ROOT=${2:-${MMLOP_DATA_ROOT:-}}
OUT=${3:-${OUT:-$(mktemp -d -t mmlop-gpu-eval.XXXXXX)}}
if [[ -z "$WEIGHTS" || -z "$DATA_ROOT" ]]; then
    echo "usage: $0 WEIGHTS DATA_ROOT [OUT]   (or set MMLOP_WEIGHTS and MMLOP_DATA_ROOT)" >&2
    exit 2
fi
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${MMLOP:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/mmlop" ]]; then MMLOP="$REPO/.venv/bin/mmlop"; else MMLOP=mmlop; fi
fi

start=$(date +%s.%N)
status=0
timeout --signal=INT --kill-after=30 "${TIME_LIMIT:-600}" \
    "$MMLOP" eval base2novel --data-root "$DATA_ROOT" --datasets eurosat,dtd --seeds "${SEED:-1}" \
    --preset mmlop --backbone "${BACKBONE:-ViT-B-16}" --pretrained "$WEIGHTS" --device "${DEVICE:-cuda}" \
    --precision "${PRECISION:-bf16}" --epochs "${EPOCHS:-20}" --shots "${SHOTS:-16}" \
    --workers "${WORKERS:-8}" --out "$OUT" ${EXTRA_ARGS:-} || status=$?
end=$(date +%s.%N)
seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "gpu_eval: status=$status wall_seconds=$seconds limit_seconds=${TIME_LIMIT:-600} out=$OUT"
if [[ $status -eq 0 && -f "$OUT/base2novel-mmlop.md" ]]; then
    cat "$OUT/base2novel-mmlop.md"
fi
exit $status
