#!/usr/bin/env bash
# Runs behind docs/results.md: Fashion-MNIST, seed 0, batch 256, 10 % validation split, final model =
# best validation epoch. Epoch budgets fit a shared 2-core CPU: LeNet-300-100 30 epochs, Conv-4
# (28x28) 2 epochs. A run whose final.json exists is skipped (FORCE=1 redoes it).
# Usage: bash docs/reproduce.sh [RUNS_DIR]   (default runs/repro; SP="python -m sparseprune" works too)
set -euo pipefail
OUT=${1:-runs/repro}
SP=${SP:-sparseprune}

run() {  # run DIR train-arguments...
  local dir=$1; shift
  if [ -f "$dir/final.json" ] && [ "${FORCE:-0}" != 1 ]; then echo "skip $dir (done)"; return; fi
  $SP train "$@" --dataset fashion-mnist --seed 0 --no-progress --overwrite --out "$dir"
}

for model in lenet300 conv4; do
  if [ "$model" = lenet300 ]; then epochs=30; else epochs=2; fi
  run $OUT/$model-aslp       --method aslp --model $model --epochs $epochs
  run $OUT/$model-aslp-sr    --method aslp --opt rescale=smart --model $model --epochs $epochs
  run $OUT/$model-aslp-sc    --method aslp --opt signed_constant=true --model $model --epochs $epochs
  if [ "$model" = lenet300 ]; then
    run $OUT/$model-aslp-sr-sc --method aslp --opt rescale=smart --opt signed_constant=true \
        --model $model --epochs $epochs
  fi
done
$SP compare $OUT/lenet300-* --plot $OUT/lenet300-pareto.png
$SP compare $OUT/conv4-* --plot $OUT/conv4-pareto.png
