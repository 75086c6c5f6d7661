#!/usr/bin/env bash
# The selection-research sweep (issues 20, 27): dynsel, its ablations, RS2 and the anchor pipelines
# (semdedup, cleanlab, semdedup+cleanlab; benchmarks/anchors.py) at equal steps, on every regime.
# Usage: bash benchmarks/run_selection.sh text|vision [REGIME...]
# One torch thread; each finished run is appended to benchmarks/results/selection-MODALITY-REGIME.runs.jsonl
# as it completes, and a rerun skips the runs already there (and reuses /work/bench/sel-MODALITY-REGIME).
# Vision trains the MLP on the efficientnet features (--vision-model mlp) of the first 10,000 Fashion-MNIST
# training images; it needs /work/bench/fashion_mnist.npz (apt-get install -y dataset-fashion-mnist, then
# python benchmarks/fashion_mnist.py --out /work/bench/fashion_mnist.npz). The anchors need cleanlab.
# Tables: python benchmarks/selection_tables.py benchmarks/results/selection-*.runs.jsonl
# Trials: SEL_METHODS (space-separated method names), BENCH (work root), RESULTS (where the records go) and SEL_EXTRA (arguments appended last, so they
# win: e.g. SEL_EXTRA="--limit 2000 --seeds 0 --ratios 0.5") change the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 HF_HUB_OFFLINE=1
BENCH="${BENCH:-/work/bench}"
modality="$1"; shift
regimes=("$@")
read -r -a METHODS <<< "${SEL_METHODS:-full random rs2 dynsel dynsel-checked dynsel-heldout-content dynsel-content dynsel-no-signals dynsel-vote semdedup cleanlab semdedup+cleanlab}"
if [ "$modality" = text ]; then
  [ ${#regimes[@]} -gt 0 ] || regimes=(clean noisy noisy-pair redundant redundant-exact redundant-uniform redundant-noisy imbalanced imbalanced-redundant paraphrase fine fine-noisy fine-redundant)
  common=(text --encoder wordllama --threads 1)
elif [ "$modality" = vision ]; then
  [ ${#regimes[@]} -gt 0 ] || regimes=(clean noisy noisy-pair redundant redundant-exact redundant-noisy imbalanced paraphrase)
  [ -f "$BENCH/fashion_mnist.npz" ] || "$PY" benchmarks/fashion_mnist.py --out "$BENCH/fashion_mnist.npz"
  common=(vision --vision-model mlp --data "$BENCH/fashion_mnist.npz" --limit 10000 --test-features "$BENCH/sel-vision-test-features" --threads 1)
else
  echo "usage: $0 text|vision [REGIME...]" >&2; exit 2
fi
RESULTS="${RESULTS:-benchmarks/results}"
read -r -a extra <<< "${SEL_EXTRA:-}"
mkdir -p "$RESULTS"
for regime in "${regimes[@]}"; do
  methods=("${METHODS[@]}")
  case "$regime" in
    imbalanced|imbalanced-redundant) methods+=(rs2-balanced dynsel-balanced) ;;
  esac
  case "$regime" in
    clean|fine) seeds=(0 1 2 3 4 5 6 7 8 9) ;;
    *) seeds=(0 1 2 3 4) ;;
  esac
  echo "== $modality $regime $(date -u +%FT%TZ)"
  "$PY" benchmarks/evidence.py "${common[@]}" --regime "$regime" --work "$BENCH/sel-$modality-$regime" \
    --ratios 0.3 0.5 --seeds "${seeds[@]}" --epochs 8 --methods "${methods[@]}" \
    --json "$RESULTS/selection-$modality-$regime.json" "${extra[@]}"
done
echo "== done $(date -u +%FT%TZ)"
