#!/usr/bin/env bash
# The runs behind docs/results.md, then docs/results.md itself (docs/write_results.py).
#
# Fashion-MNIST, LeNet-300-100 and Conv-4 (28x28), each with ASLP, ASLP + Smart Rescale, ASLP +
# signed constant, Supermask, Supermask + DWR and Edge-Popup (density 0.5, its default); then on
# LeNet-300-100 the methods that train weights, at density 0.1: ASLP and Supermask with a budget,
# reparam, hard_concrete (these four learn their density: the constrained budget of --density,
# sparseprune.budget.Budget), magnitude (3 rounds), lottery (10 rounds), and sensitivity (its own
# density: pruning on validation-loss plateaus); seed 0, batch 256, 10 % validation
# split, final model = best validation epoch (of the last round), 2 torch threads.
# Budgets fit a 2-core CPU: LeNet-300-100 30 epochs (~1.5 s each: under 1 min per run), Conv-4
# 4 epochs of 50 batches (~0.95 s per batch of 256 plus ~50 s of evaluation: about 4 min per run,
# 200 batches = one pass over the training split in all), the weight-training runs about 1 min
# each: about 45 min for the 19 runs on an otherwise idle machine (measured: LeNet ~1.5 min,
# Conv-4 ~5.5 min per run). Other processes on the cores slow it down several-fold.
#
# Usage: bash docs/reproduce.sh      (or `make repro`)
#   OUT=runs/repro   where the runs go (gitignored);  DEST=docs/results.md   the table
#   PY=python        the interpreter (runs `$PY -m sparseprune`);  FORCE=1 redoes finished runs
#   LENET_EPOCHS, CONV4_EPOCHS, CONV4_STEPS, WEIGHT_EPOCHS  the budgets;  MODELS, DATASET  for tests only
#   THREADS=2        torch threads per run (1 when other jobs share the cores)
#   ONLY="name ..."  train only these runs (e.g. the learned-density ones after a budget change);
#                    write_results.py keeps the sections none of whose runs is in OUT
# A run is skipped when it finished with exactly the same command (its command.txt); otherwise it
# is (re)trained from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build works without an install
OUT=${OUT:-runs/repro}
DEST=${DEST:-docs/results.md}
PY=${PY:-python}
LENET_EPOCHS=${LENET_EPOCHS:-30}
CONV4_EPOCHS=${CONV4_EPOCHS:-4}
CONV4_STEPS=${CONV4_STEPS:-50}
WEIGHT_EPOCHS=${WEIGHT_EPOCHS:-20}  # per weight-training run (split into rounds where it has them)
MODELS=${MODELS:-lenet300 conv4}
THREADS=${THREADS:-2}
ONLY=${ONLY:-}
COMMON="--dataset ${DATASET:-fashion-mnist} --seed 0 --batch-size 256 --threads $THREADS --no-progress"

mkdir -p "$OUT"
: > "$OUT/commands.sh"

run() {  # run NAME train-arguments...
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  local dir=$OUT/$name
  local cmd="sparseprune train $* $COMMON --out $dir"
  echo "$cmd" >> "$OUT/commands.sh"
  if [ -f "$dir/final.json" ] && [ "${FORCE:-0}" != 1 ] && \
     [ "$(cat "$dir/command.txt" 2>/dev/null)" = "$cmd" ]; then
    echo "skip $dir (finished with the same command)"; return
  fi
  echo "== $cmd"
  local start=$SECONDS
  $PY -m sparseprune train "$@" $COMMON --out "$dir" --overwrite
  echo "$cmd" > "$dir/command.txt"
  echo "== $name: $((SECONDS - start)) s"
}

for model in $MODELS; do
  if [ "$model" = conv4 ]; then
    e="$CONV4_EPOCHS --steps-per-epoch $CONV4_STEPS"
  else
    e=$LENET_EPOCHS
  fi
  run $model-aslp          --method aslp --model $model --epochs $e
  run $model-aslp-sr       --method aslp --rescale smart --model $model --epochs $e
  run $model-aslp-sc       --method aslp --signed-constant --model $model --epochs $e
  run $model-supermask     --method supermask --model $model --epochs $e
  run $model-supermask-dwr --method supermask --rescale dwr --model $model --epochs $e
  run $model-edge-popup    --method edge_popup --density 0.5 --model $model --epochs $e
done

# Methods that train weights (and ASLP with a budget), LeNet-300-100, target density 0.1.
if [[ " $MODELS " == *" lenet300 "* ]]; then
  w="--model lenet300 --epochs $WEIGHT_EPOCHS"
  run lenet300-aslp-budget   --method aslp --density 0.1 $w
  run lenet300-supermask-budget --method supermask --density 0.1 $w
  run lenet300-reparam       --method reparam --density 0.1 $w
  run lenet300-hard-concrete --method hard_concrete --density 0.1 $w
  run lenet300-magnitude     --method magnitude --density 0.1 --rounds 3 --model lenet300 \
                             --epochs $(((WEIGHT_EPOCHS + 3) / 4))
  run lenet300-lottery       --method lottery --rounds 10 --model lenet300 \
                             --epochs $(((WEIGHT_EPOCHS + 9) / 10))
  run lenet300-sensitivity   --method sensitivity --variant specific --plateau-patience 2 $w
fi

$PY docs/write_results.py "$OUT" "$DEST"
