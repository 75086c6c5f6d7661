#!/usr/bin/env bash
# The regime sweep behind docs/results.md ("Messy data"): every regime, both modalities, one torch thread.
# Usage: bash benchmarks/run_regimes.sh text|vision [REGIME...]
# Each finished run is appended to benchmarks/results/regimes-MODALITY-REGIME.runs.jsonl as it completes.
# Vision needs /work/bench/fashion_mnist.npz (python benchmarks/fashion_mnist.py --out /work/bench/fashion_mnist.npz).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1
modality="$1"; shift
regimes=("$@")
METHODS=(full random rs2 dynsel dynsel-no-dedup dynsel-no-trust dynsel-trust-0.5 dynsel-trust-0.25 score)
if [ "$modality" = text ]; then
  [ ${#regimes[@]} -gt 0 ] || regimes=(clean noisy redundant imbalanced long)
  common=(text --encoder wordllama --seeds 0 1 2 3 4 --threads 1)
else
  [ ${#regimes[@]} -gt 0 ] || regimes=(redundant noisy clean imbalanced long)
  common=(vision --data /work/bench/fashion_mnist.npz --limit 10000 --seeds 0 1 2 --threads 1)
  METHODS=(full random rs2 dynsel dynsel-no-dedup dynsel-no-trust dynsel-trust-0.5)
fi
for regime in "${regimes[@]}"; do
  methods=("${METHODS[@]}")
  case "$regime" in
    clean) ratios=(0.3 0.5 0.7) ;;
    redundant) ratios=(0.3 0.5) ;;
    imbalanced) ratios=(0.5); methods+=(dynsel-balanced rs2-balanced) ;;
    *) ratios=(0.5) ;;
  esac
  "$PY" benchmarks/evidence.py "${common[@]}" --regime "$regime" --work "/work/bench/ev-$modality-$regime" \
    --ratios "${ratios[@]}" --methods "${methods[@]}" --json "benchmarks/results/regimes-$modality-$regime.json"
done
