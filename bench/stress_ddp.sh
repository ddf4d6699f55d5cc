#!/usr/bin/env bash
# N resumed 2-process DDP runs in a row, each from the same stopped checkpoint, counting the runs that end
# in an abort. CI once saw a resumed DDP run end with rank 1 aborting at exit ("terminate called without
# an active exception", exit -6): a run that trained and exported, then lost its exit status.
#
#   bench/stress_ddp.sh [N]        # default 30; 15 to 20 s a run on 2 CPU cores
#
# One run (distilbert --smoke, 2 processes, accelerate_configs/multi_gpu.yaml) is stopped by SIGTERM
# after its step-20 checkpoint; each of the N runs resumes a copy of it (--resume auto) to step 60. A run
# passes when it exits 0 with summary.json at step 60 and neither rank aborted. The last line:
#   stress_ddp: N resumed runs, A aborted, F failed otherwise
# and the exit status is 0 only when A and F are 0. The stderr of every failed run is kept in bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "stress_ddp: N=$runs: expected a whole number >= 1" >&2; exit 2; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=bench/out/stress_ddp
mkdir -p "$out"

train() {  # train.py under 2 DDP processes, as a user launches it
    python -m accelerate.commands.launch -q --config_file accelerate_configs/multi_gpu.yaml --num_processes 2 \
        --main_process_port 0 launch/train.py --variant distilbert --smoke --output-dir "$1" \
        train.max_steps=60 train.save_every_steps=20 train.eval_every_steps=30 train.log_every_steps=10 \
        track.plots=false track.wandb=off "${@:2}"
}

# The stopped run: SIGTERM to every process of the launch once step-20 is complete, as SLURM signals a step
setsid bash -c "$(declare -f train); train '$work/stopped'" >/dev/null 2>"$work/stopped.err" &
leader=$!
until [[ -f $work/stopped/checkpoints/step-20/state.json ]]; do
    kill -0 "$leader" 2>/dev/null || { echo "stress_ddp: the run to stop ended first:" >&2; tail -20 "$work/stopped.err" >&2; exit 1; }
    sleep 0.2
done
kill -TERM -- "-$leader"
while kill -0 -- "-$leader" 2>/dev/null; do sleep 0.2; done  # every process of it, not only its shell
wait "$leader" || true
grep -q "emodist: stopped by SIGTERM at step" "$work/stopped.err" ||
    { echo "stress_ddp: the run did not stop on SIGTERM:" >&2; tail -20 "$work/stopped.err" >&2; exit 1; }

aborted=0 failed=0 started=$SECONDS
for ((i = 1; i <= runs; i++)); do
    run=$work/run-$i
    cp -a "$work/stopped" "$run"
    rc=0
    train "$run" --resume auto >/dev/null 2>"$work/err" || rc=$?
    steps=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["train"]["steps"])' "$run/summary.json" 2>/dev/null || echo none)
    if grep -q -E "terminate called|Signal 6|exitcode *: -6|SIGABRT" "$work/err"; then
        verdict=aborted; aborted=$((aborted + 1))
    elif ((rc != 0)) || [[ $steps != 60 ]]; then
        verdict="failed (exit $rc, steps $steps)"; failed=$((failed + 1))
    else
        verdict=ok
    fi
    [[ $verdict == ok ]] || cp "$work/err" "$out/run-$i.err"
    echo "run $i/$runs: $verdict ($((SECONDS - started)) s so far)"
    rm -rf "$run"
done
echo "stress_ddp: $runs resumed runs, $aborted aborted, $failed failed otherwise"
((aborted == 0 && failed == 0))
