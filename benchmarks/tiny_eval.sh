#!/usr/bin/env bash
# The measured table of docs/TINY_EVAL.md: every preset on the shipped tiny backbone
# (mmlop-tiny/fmnist) and the Fashion-MNIST mini benchmark, on the CPU, 3 seeds, the paper's
# default training settings (16 shots, 20 epochs base-to-novel / xd, 50 epochs few-shot).
#
# Usage:  benchmarks/tiny_eval.sh [OUT]
#   OUT        output directory (default var/tiny-eval); cells already there are reused, so an
#              interrupted run resumes.
# Env overrides: DATA_ROOT (var/fmnist; written by `mmlop eval prepare-fmnist` when missing),
# TEST_PER_CLASS (test photos per class and per shifted domain; default 200, i.e. 2,000 of the
# 10,000; 1000 = the whole test split), TRAIN_PER_CLASS (all), SEEDS ("1 2 3"), FEWSHOT_SHOTS (4),
# EPOCHS (the tasks' defaults: 20 base-to-novel and xd, 50 few-shot), DEVICE (cpu),
# MMLOP (default .venv/bin/mmlop). About 45 minutes on 2 CPU cores with the defaults.
# Writes OUT/*.json|md and OUT/TABLE.md (the assembled table), and prints the table and minutes
# per task. Figures, not a pass/fail test.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-${OUT:-$REPO/var/tiny-eval}}
DATA_ROOT=${DATA_ROOT:-$REPO/var/fmnist}
SEEDS=${SEEDS:-1 2 3}
if [[ -z "${MMLOP:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/mmlop" ]]; then MMLOP="$REPO/.venv/bin/mmlop"; else MMLOP=mmlop; fi
fi
PYTHON=$(dirname "$(command -v "$MMLOP")")/python
[[ -x "$PYTHON" ]] || PYTHON=python3
mkdir -p "$OUT"

if [[ ! -f "$DATA_ROOT/fmnist-v2/split_zhou_FashionMNISTV2.json" ]]; then
    "$MMLOP" eval prepare-fmnist "$DATA_ROOT" --test-per-class "${TEST_PER_CLASS:-200}" \
        ${TRAIN_PER_CLASS:+--train-per-class "$TRAIN_PER_CLASS"} --quiet
fi
COMMON=(--data-root "$DATA_ROOT" --backbone mmlop-tiny --pretrained fmnist --device "${DEVICE:-cpu}"
        --out "$OUT" --quiet --seeds $SEEDS ${EPOCHS:+--epochs "$EPOCHS"})
timed() {  # timed LABEL CMD...: run CMD, print its minutes
    local label=$1 start=$SECONDS
    shift
    "$@"
    echo "tiny_eval: $label took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

# Base-to-novel of every row (the main presets and each ablation) in one report.
timed "base2novel (9 presets)" "$MMLOP" eval ablation "${COMMON[@]}" --datasets fmnist \
    --presets zeroshot coop ivlp ivlp+lscl mmlop mmlop-fullrank mmlop-nolscl mmlop-noudc mmlop-noshare
# Few-shot and cross-domain columns for the main rows (the ablation rows are base-to-novel, as in the paper).
for preset in zeroshot coop ivlp ivlp+lscl mmlop; do
    timed "fewshot $preset" "$MMLOP" eval fewshot "${COMMON[@]}" --datasets fmnist --shots "${FEWSHOT_SHOTS:-4}" \
        --preset "$preset"
    timed "xd $preset" "$MMLOP" eval xd "${COMMON[@]}" --source fmnist --preset "$preset"
done
(cd "$REPO" && "$PYTHON" -m benchmarks._tiny_table "$OUT") > "$OUT/TABLE.md"
cat "$OUT/TABLE.md"
