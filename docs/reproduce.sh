#!/usr/bin/env bash
# Runs behind docs/results.md (Fashion-MNIST, seed 0, batch 256, 10 % validation split, final model
# = best validation epoch). Epoch budgets fit a shared 2-core CPU: LeNet-300-100 30 epochs,
# Conv-4 3 epochs. Usage: bash docs/reproduce.sh [RUNS_DIR]   (default runs/repro)
set -euo pipefail
OUT=${1:-runs/repro}
SP=${SP:-sparseprune}   # or SP="python -m sparseprune"
COMMON="--dataset fashion-mnist --seed 0 --no-progress --overwrite"

for model in lenet300 conv4; do
  if [ "$model" = lenet300 ]; then epochs=30; else epochs=3; fi
  $SP train --method aslp --model $model $COMMON --epochs $epochs --out $OUT/$model-aslp
  $SP train --method aslp --opt rescale=smart --model $model $COMMON --epochs $epochs --out $OUT/$model-aslp-sr
  $SP train --method aslp --opt signed_constant=true --model $model $COMMON --epochs $epochs --out $OUT/$model-aslp-sc
  if [ "$model" = lenet300 ]; then
    $SP train --method aslp --opt rescale=smart --opt signed_constant=true --model $model $COMMON --epochs $epochs --out $OUT/$model-aslp-sr-sc
  fi
done
$SP compare $OUT/lenet300-* --plot $OUT/lenet300-pareto.png
$SP compare $OUT/conv4-* --plot $OUT/conv4-pareto.png
