#!/usr/bin/env bash
# The one launcher every slurm/*.sbatch template calls, inside its allocation. It derives the whole
# distributed launch from SLURM: the head node and its address, a rendezvous port and id from the job
# id, each node's machine rank (SLURM_NODEID inside srun), and num_processes = nodes x processes per
# node (the node's GPUs; one CPU process on a node without GPUs, which is how CI runs it). On the
# preemption signal (#SBATCH --signal=B:USR1@SECONDS) it asks the training processes to checkpoint and
# stop, then requeues the job; the requeued job resumes from its newest checkpoint (--resume auto).
#
# Settings (environment; a template sets defaults, a user overrides any of them at submission):
#   EMODIST_VARIANT            the variant to train (launch/train.py --list-variants)
#   EMODIST_ACCELERATE_CONFIG  the topology: a file of accelerate_configs/ (default: multi_gpu.yaml)
#   EMODIST_TRAIN_ARGS         more launch/train.py arguments, e.g. "--smoke" or "optim.lr=1e-4 train.epochs=2"
#   EMODIST_RUN_DIR            run directory (default runs/<job name>-<job id>: the same after a requeue)
#   EMODIST_WANDB_GROUP        the study's wandb group (exported as WANDB_RUN_GROUP; job type = the variant)
#   EMODIST_PROCS_PER_NODE     processes per node (default: the GPUs SLURM gave the node, 1 without GPUs)
#   EMODIST_PORT               rendezvous port on the head node (default: 20000 + job id % 20000)
#   EMODIST_NET_IFNAME         network interface for NCCL and gloo (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME)
#   EMODIST_DEBUG              1: NCCL_DEBUG=INFO and TORCH_DISTRIBUTED_DEBUG=DETAIL
#   EMODIST_MAX_REQUEUES       stop requeueing after this many restarts (default 20)
#   EMODIST_SETUP              a command run first on every node, e.g. "module load cuda; source venv/bin/activate"
#                              (default: activate the repository's .venv when there is one)
#   EMODIST_HOME               the repository (default: the directory sbatch was called from)
#   EMODIST_WORKDIR            where training runs, so where relative paths in EMODIST_TRAIN_ARGS and
#                              EMODIST_RUN_DIR are read from (default: EMODIST_HOME; launch/sweep.py --slurm sets
#                              the directory it ran in, as --local reads them). A relative one is read from the
#                              directory sbatch was called from, as a relative EMODIST_HOME is.
# Nodes and GPUs are SLURM's: `sbatch --nodes=4 --gpus-per-node=4 slurm/mistral.sbatch`, or the
# environment SBATCH_GPUS_PER_NODE=4, override the #SBATCH lines.
#
# `launch.sh --compare RUN_DIR... [--output DIR]` runs launch/compare.py in the same environment (the
# report job that study.sbatch queues).
#
# Exit status: training's (0 done, 2 refused, 3 diverged); 75 when the job stopped on the preemption
# signal (it is requeued unless EMODIST_MAX_REQUEUES is reached).
set -euo pipefail

EXIT_PREEMPTED=75

log() { echo "emodist-slurm: $*"; }
die() { echo "emodist-slurm: error: $*" >&2; exit 2; }

[[ -n ${SLURM_JOB_ID:-} ]] || die "not inside a SLURM job: submit a template, e.g. sbatch slurm/distilbert.sbatch"
HOME_DIR=${EMODIST_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
[[ -f $HOME_DIR/launch/train.py ]] ||
    die "no launch/train.py in $HOME_DIR: submit from the emodist repository (cd emodist && sbatch slurm/...), or set EMODIST_HOME"
WORK_DIR=${EMODIST_WORKDIR:-$HOME_DIR}
[[ -d $WORK_DIR ]] || die "EMODIST_WORKDIR=$WORK_DIR: no such directory"
# both whole, before any cd; the nodes' tasks (started in WORK_DIR) get them so
HOME_DIR=$(cd "$HOME_DIR" && pwd) WORK_DIR=$(cd "$WORK_DIR" && pwd)
export EMODIST_HOME=$HOME_DIR EMODIST_WORKDIR=$WORK_DIR
cd "$HOME_DIR"

setup_environment() {
    if [[ -n ${EMODIST_SETUP:-} ]]; then
        eval "$EMODIST_SETUP"
    elif [[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]]; then
        # shellcheck disable=SC1091
        . .venv/bin/activate
    fi
    command -v accelerate >/dev/null ||
        die "accelerate is not on PATH on $(hostname -s) (${SLURMD_NODENAME:-?}): activate the environment before sbatch, or set EMODIST_SETUP"
}

# --- on every node (srun runs this once per node) ---------------------------------------------------

node_main() {
    setup_environment
    cd "$WORK_DIR"
    local rank=${SLURM_NODEID:?srun sets SLURM_NODEID} args=() rendezvous=()
    if ((NNODES > 1)); then
        # the nodes meet at the head node, which hosts the c10d store: no guessing from addresses
        # (emulated nodes share one machine, so every node would think it is the host)
        rendezvous=(--main_process_ip "$HEAD_ADDR" --rdzv_backend c10d --rdzv_conf "is_host=$((rank == 0 ? 1 : 0))")
    fi
    read -r -d '' -a args <<<"${EMODIST_TRAIN_ARGS:-}" || true  # words, split on blanks and newlines, not globbed
    log "node ${SLURMD_NODENAME:-$(hostname -s)}: machine rank $rank of $NNODES, $PROCS_PER_NODE process(es)"
    # The training processes alone handle the stop signal (checkpoint, exit 75): the launcher above them
    # ignores it, or it would die of it and leave them orphaned. They inherit "ignored" and install
    # their own handler (emodist.runtime.signals.StopSignals) once training starts.
    trap '' USR1
    # --quiet: a stopped or failed run's own message, without the launcher's traceback after it
    local deepspeed=()  # the JSON a ZeRO config names relative to the repository, whole: training reads it here
    [[ -z ${DEEPSPEED_FILE:-} ]] || deepspeed=(--deepspeed_config_file "$DEEPSPEED_FILE")
    exec accelerate launch --quiet --config_file "$ACCELERATE_CONFIG" "${deepspeed[@]}" \
        --num_machines "$NNODES" --num_processes "$NUM_PROCESSES" --machine_rank "$rank" \
        --main_process_port "$PORT" "${rendezvous[@]}" \
        "$HOME_DIR/launch/train.py" --variant "$EMODIST_VARIANT" --output-dir "$RUN_DIR" --resume auto "${args[@]}"
}

case ${1:-} in
    --node) node_main ;;                                               # srun's task on each node
    --compare) shift; setup_environment; exec python launch/compare.py "$@" ;;  # study.sbatch's report job
esac

# --- in the batch shell (once, on the first node) -------------------------------------------------------

[[ -n ${EMODIST_VARIANT:-} ]] || die "EMODIST_VARIANT is not set: use a template (slurm/*.sbatch) or export it"
read -r -d '' -a own_args <<<"${EMODIST_TRAIN_ARGS:-}" || true  # as node_main splits it
for arg in "${own_args[@]}"; do  # launch.sh's own: a second one would win, and requeueing would watch another run
    case $arg in
        --output-dir | --output-dir=*) die "EMODIST_TRAIN_ARGS: $arg: the run directory is EMODIST_RUN_DIR's to set" ;;
        --resume | --resume=*) die "EMODIST_TRAIN_ARGS: $arg: a job resumes its own run (--resume auto); to start over, set a new EMODIST_RUN_DIR" ;;
        --variant | --variant=*) die "EMODIST_TRAIN_ARGS: $arg: the variant is EMODIST_VARIANT's to set" ;;
    esac
done
[[ ${EMODIST_MAX_REQUEUES:-20} =~ ^[0-9]{1,9}$ ]] ||
    die "EMODIST_MAX_REQUEUES=$EMODIST_MAX_REQUEUES: expected a whole number from 0 (never requeue) to 999999999"
if [[ -n ${EMODIST_PORT:-} ]] && ! [[ $EMODIST_PORT =~ ^[1-9][0-9]{0,4}$ && $EMODIST_PORT -le 65535 ]]; then
    die "EMODIST_PORT=$EMODIST_PORT: expected a TCP port, 1 to 65535"
fi
ACCELERATE_CONFIG=${EMODIST_ACCELERATE_CONFIG:-accelerate_configs/multi_gpu.yaml}
[[ -f $ACCELERATE_CONFIG ]] || die "EMODIST_ACCELERATE_CONFIG=$ACCELERATE_CONFIG: no such file in $HOME_DIR (see accelerate_configs/)"
[[ $ACCELERATE_CONFIG == /* ]] || ACCELERATE_CONFIG=$HOME_DIR/$ACCELERATE_CONFIG
setup_environment
DEEPSPEED_FILE=$(python3 - "$ACCELERATE_CONFIG" <<'EOF'
import sys
from pathlib import Path
import yaml
settings = yaml.safe_load(Path(sys.argv[1]).read_text(encoding="utf-8")) or {}
print((settings.get("deepspeed_config") or {}).get("deepspeed_config_file") or "")
EOF
) || die "EMODIST_ACCELERATE_CONFIG=$ACCELERATE_CONFIG: not an accelerate config (YAML)"
if [[ -n $DEEPSPEED_FILE && $DEEPSPEED_FILE != /* ]]; then DEEPSPEED_FILE=$HOME_DIR/$DEEPSPEED_FILE; fi
cd "$WORK_DIR"  # from here on, as on the nodes: the run directory is read from where training runs

gpus_here() {  # GPUs this job may use on this node: SLURM's count, if the node really has GPUs
    local physical
    physical=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    ((physical > 0)) || { echo 0; return; }
    echo "${SLURM_GPUS_ON_NODE:-$physical}"
}

NNODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
gpus=$(gpus_here)
if [[ -n ${EMODIST_PROCS_PER_NODE:-} ]]; then
    PROCS_PER_NODE=$EMODIST_PROCS_PER_NODE
    device="processes per node from EMODIST_PROCS_PER_NODE"
elif ((gpus > 0)); then
    PROCS_PER_NODE=$gpus
    device="one process per GPU"
else
    PROCS_PER_NODE=1
    device="no GPU on this node: one CPU process per node"
fi
[[ $PROCS_PER_NODE =~ ^[1-9][0-9]*$ ]] || die "EMODIST_PROCS_PER_NODE=$PROCS_PER_NODE: expected a whole number >= 1"
NUM_PROCESSES=$((NNODES * PROCS_PER_NODE))
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
HEAD_ADDR=$(getent ahostsv4 "$HEAD_NODE" | awk 'NR == 1 {print $1}')
HEAD_ADDR=${HEAD_ADDR:-$HEAD_NODE}
PORT=${EMODIST_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
RUN_DIR=${EMODIST_RUN_DIR:-runs/${SLURM_JOB_NAME:-emodist}-$SLURM_JOB_ID}
export ACCELERATE_CONFIG DEEPSPEED_FILE NNODES PROCS_PER_NODE NUM_PROCESSES HEAD_ADDR PORT RUN_DIR
export PET_RDZV_ID=$SLURM_JOB_ID  # torchrun's rendezvous id (accelerate passes no --rdzv_id of its own)
if [[ -n ${EMODIST_WANDB_GROUP:-} ]]; then
    export WANDB_RUN_GROUP=$EMODIST_WANDB_GROUP WANDB_JOB_TYPE=$EMODIST_VARIANT
fi
if [[ -n ${EMODIST_NET_IFNAME:-} ]]; then
    export NCCL_SOCKET_IFNAME=$EMODIST_NET_IFNAME GLOO_SOCKET_IFNAME=$EMODIST_NET_IFNAME
fi
if [[ ${EMODIST_DEBUG:-0} == 1 ]]; then
    export NCCL_DEBUG=INFO TORCH_DISTRIBUTED_DEBUG=DETAIL
fi

restarts=${SLURM_RESTART_COUNT:-0}
log "job $SLURM_JOB_ID${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)}$( ((restarts > 0)) && echo ", restart $restarts"): $EMODIST_VARIANT with $ACCELERATE_CONFIG"
log "$NNODES node(s) ($SLURM_JOB_NODELIST) x $PROCS_PER_NODE = $NUM_PROCESSES process(es) ($device); head $HEAD_NODE = $HEAD_ADDR:$PORT"
log "run directory $RUN_DIR"

stop_checkpoint() {  # the run's newest checkpoint if training wrote it on stopping for a signal, else nothing
    python3 - "$RUN_DIR" <<'EOF'
import json, sys
from pathlib import Path
steps = [p for p in Path(sys.argv[1], "checkpoints").glob("step-*") if p.name[5:].isdigit()]
newest = max(steps, key=lambda p: int(p.name[5:]), default=None)
try:
    if newest and json.loads((newest / "state.json").read_text()).get("stopped_by"):
        print(newest)
except (OSError, ValueError):
    pass
EOF
}

stop_signal=""
srun_pid=""
# shellcheck disable=SC2317  # called by the trap
on_stop_signal() {
    stop_signal=$1
    log "received SIG$1: asking training to checkpoint and stop"
    if [[ -n $srun_pid ]]; then kill -USR1 "$srun_pid" 2>/dev/null || true; fi  # srun hands it to every task
}
trap 'on_stop_signal USR1' USR1

previous_stop=$(stop_checkpoint)
srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
    bash "$HOME_DIR/slurm/launch.sh" --node &
srun_pid=$!
while :; do  # `wait` returns early when a trapped signal arrives; srun goes on until training stops
    rc=0
    wait "$srun_pid" || rc=$?
    kill -0 "$srun_pid" 2>/dev/null || break
done

if ((rc == 0)); then
    log "training finished: $RUN_DIR/summary.json"
    exit 0
fi
# Training exits 75 when it stopped on the signal, but the launchers above it report any failure as 1:
# the evidence is in the run directory, a checkpoint written on stopping, and no summary.json
stopped_at=$(stop_checkpoint)
if [[ -n $stop_signal && -n $stopped_at && $stopped_at != "$previous_stop" && ! -f $RUN_DIR/summary.json ]]; then
    max=$((10#${EMODIST_MAX_REQUEUES:-20}))  # checked at the start; base 10 even with a leading 0
    if ((restarts >= max)); then
        log "stopped on SIG$stop_signal at $stopped_at; not requeued: $restarts restarts reached EMODIST_MAX_REQUEUES=$max"
        exit "$EXIT_PREEMPTED"
    fi
    log "stopped on SIG$stop_signal at $stopped_at: requeueing job $SLURM_JOB_ID (it resumes with --resume auto)"
    scontrol requeue "$SLURM_JOB_ID" ||
        log "scontrol requeue failed (a job submitted with --no-requeue?): submit it again to resume"
    exit "$EXIT_PREEMPTED"
fi
log "training failed (exit status $rc): see the messages above"
exit "$rc"
