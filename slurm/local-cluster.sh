#!/usr/bin/env bash
# A real SLURM on this one machine: slurmctld plus N slurmd daemons, each an emulated node on its own
# loopback address (node1 = 127.0.0.11, node2 = 127.0.0.12, ...), with munge authentication. Try a
# template here before spending cluster hours; CI runs the template tests against it.
#
#   slurm/local-cluster.sh start      # install (apt, first time), configure, start, check with a real srun
#   slurm/local-cluster.sh status     # daemons, nodes and queue; exit 0 when it answers, 3 when stopped
#   slurm/local-cluster.sh stop       # cancel jobs, stop the daemons this script started (by pid)
#
# Needs root (apt, /etc/hosts, /etc/slurm) and Debian's slurm packages (22.05 in bookworm; installed
# when missing). Idempotent: `start` on a running cluster only reports it (or restarts it when the
# settings changed); `stop` stops only the processes whose pids it recorded at start, and removes only
# the /etc/hosts lines it added.
#
# The nodes advertise what the templates ask for, not what the machine has: every node shares this
# machine's cores and file system, and its GPUs are stand-ins (/dev/null clones), so training runs CPU
# processes. Settings (environment, read by `start`):
#   EMODIST_SLURM_NODES    nodes (default 2)
#   EMODIST_SLURM_CPUS     CPUs per node (default 128)
#   EMODIST_SLURM_GPUS     GPUs per node for --gpus-per-node / --gres (default 16; 0 for none)
#   EMODIST_SLURM_MEM_MB   memory per node in MB (default: this machine's memory)
#   EMODIST_SLURM_DIR      state, logs and pid files (default /var/lib/emodist-slurm)
#   EMODIST_SLURM_REQUEUE_DELAY  seconds a requeued job waits before it starts again (default 10;
#                          SLURM's own default is 120: it is also the job-step credential lifetime)
set -euo pipefail

NODES=${EMODIST_SLURM_NODES:-2}
CPUS=${EMODIST_SLURM_CPUS:-128}
GPUS=${EMODIST_SLURM_GPUS:-16}
MEM_MB=${EMODIST_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)}
DIR=${EMODIST_SLURM_DIR:-/var/lib/emodist-slurm}
REQUEUE_DELAY=${EMODIST_SLURM_REQUEUE_DELAY:-10}
CONF=/etc/slurm/slurm.conf
MARK="# emodist local-cluster"   # tags every line and file this script writes outside $DIR
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: error: $*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

# --- processes, by recorded pid -------------------------------------------------------------------

alive() {  # alive PID COMM: the pid runs and is the program we started (a zombie counts as gone)
    local pid=$1 comm=$2 state
    [[ -n $pid && -r /proc/$pid/stat ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
    [[ $state != Z ]]
}

foreign_munged() {  # a live munged this script did not start (pgrep alone would count zombies too)
    local pid
    for pid in $(pgrep -x munged); do alive "$pid" munged && return 0; done
    return 1
}

pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }

daemons() {  # name comm pairs of everything `start` starts
    echo "munged munged"
    echo "slurmctld slurmctld"
    local n
    for ((n = 1; n <= $(node_count); n++)); do echo "slurmd-node$n slurmd"; done
}

node_count() {  # the running cluster's node count (its config), else the requested one
    if [[ -f $DIR/nodes ]]; then cat "$DIR/nodes"; else echo "$NODES"; fi
}

all_running() {
    local name comm
    [[ -f $DIR/started ]] || return 1
    while read -r name comm; do
        [[ $name == munged && ! -f $DIR/run/munged.ours ]] && { foreign_munged || return 1; continue; }
        alive "$(pid_of "$name")" "$comm" || return 1
    done < <(daemons)
}

# --- start ----------------------------------------------------------------------------------------

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get: install ${missing[*]} yourself"
    say "installing ${missing[*]} (apt)"
    # the packages' postinst would start the daemons as services: forbid that while installing
    local policy=/usr/sbin/policy-rc.d added=""
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; added=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [[ -z $added ]] || rm -f "$policy"
}

render_config() {  # slurm.conf for the requested settings, on stdout
    local host n
    host=$(hostname -s)
    {
        echo "$MARK: $NODES nodes on this machine; slurm/local-cluster.sh stop stops them"
        cat <<EOF
ClusterName=emodist-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=$REQUEUE_DELAY
StateSaveLocation=$DIR/state
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SlurmdParameters=config_overrides
EnforcePartLimits=ALL
MinJobAge=5
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
EOF
        for ((n = 1; n <= NODES; n++)); do
            echo "NodeName=node$n NodeHostname=$host NodeAddr=127.0.0.$((10 + n)) Port=$((17000 + n)) CPUs=$CPUS" \
                 "RealMemory=$MEM_MB$( ((GPUS > 0)) && echo " Gres=gpu:$GPUS") State=UNKNOWN"
        done
        echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    }
}

write_config() {
    local n
    if [[ -f $CONF ]] && ! grep -q "^$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script: this machine may belong to a real cluster. Move it away to use the local cluster."
    fi
    mkdir -p /etc/slurm "$DIR"/{run,log,state,spool}
    render_config >"$CONF"
    # GPUs without hardware: SLURM's gpu plugin wants one device file per GPU, so each is a clone of
    # /dev/null (char 1,3) under $DIR; nothing in a job can mistake them for real GPUs
    if ((GPUS > 0)); then
        mkdir -p "$DIR/dev"
        for ((n = 0; n < GPUS; n++)); do
            [[ -c $DIR/dev/gpu$n ]] || mknod "$DIR/dev/gpu$n" c 1 3
        done
        printf '%s\nAutoDetect=off\nName=gpu File=%s\n' "$MARK" "$DIR/dev/gpu[0-$((GPUS - 1))]" >/etc/slurm/gres.conf
    elif [[ -f /etc/slurm/gres.conf ]] && grep -q "^$MARK" /etc/slurm/gres.conf; then
        rm -f /etc/slurm/gres.conf
    fi
    echo "$NODES" >"$DIR/nodes"
}

add_hosts() {  # node names resolve, as on a real cluster (the head node's address comes from them)
    local n
    remove_hosts
    for ((n = 1; n <= NODES; n++)); do echo "127.0.0.$((10 + n)) node$n $MARK" >>/etc/hosts; done
}

remove_hosts() {
    grep -q "$MARK" /etc/hosts 2>/dev/null || return 0
    # /etc/hosts may be a bind mount: rewrite it in place rather than replacing the file
    local kept
    kept=$(grep -v "$MARK" /etc/hosts || true)
    printf '%s\n' "$kept" >/etc/hosts
}

start_munge() {
    if foreign_munged; then rm -f "$DIR/run/munged.ours"; return 0; fi  # someone else's: use it, leave it
    [[ -f /etc/munge/munge.key ]] || { mungekey --create >/dev/null 2>&1 && chown munge:munge /etc/munge/munge.key; }
    mkdir -p /run/munge && chown munge:munge /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 test -S /run/munge/munge.socket.2 -a -s /run/munge/munged.pid ||
        die "munged did not start: see /var/log/munge/munged.log"
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
    touch "$DIR/run/munged.ours"
}

wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds, at most SECONDS
    local seconds=$1 i
    shift
    for ((i = 0; i < seconds * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}

queue_empty() { [[ -z $(squeue -h 2>/dev/null) ]]; }

nodes_idle() {
    [[ $(sinfo -h -N -o '%T' 2>/dev/null | grep -c '^idle') == "$(node_count)" ]]
}

start() {
    [[ $(id -u) == 0 ]] || die "needs root (apt, /etc/hosts, /etc/slurm): run it with sudo"
    if all_running && sinfo -h >/dev/null 2>&1; then
        if [[ $(render_config) == "$(cat "$CONF" 2>/dev/null)" ]]; then
            say "already running: $(node_count) nodes"
            status_lines
            return 0
        fi
        say "running with other settings: restarting it (its jobs are cancelled)"
    fi
    if [[ -f $DIR/started ]]; then stop >/dev/null; fi  # running, half-started or stale: begin from nothing
    install_packages
    write_config
    add_hosts
    start_munge
    # node states are rebuilt from the config (a node drained in an earlier life stays usable); the
    # job state is kept, so job ids, and with them the default run directories, never repeat
    rm -f "$DIR"/state/node_state*
    slurmctld
    wait_for 15 test -s "$DIR/run/slurmctld.pid" || die "slurmctld did not start: see $DIR/log/slurmctld.log"
    local n
    for ((n = 1; n <= NODES; n++)); do slurmd -N "node$n"; done
    touch "$DIR/started"
    if ! wait_for 30 nodes_idle; then
        sinfo -N >&2 || true
        die "the nodes did not come up idle: see $DIR/log/slurmd-node*.log and $DIR/log/slurmctld.log"
    fi
    # "idle" does not prove jobs run: one real step across every node does
    if ! timeout 60 srun --nodes="$NODES" --ntasks-per-node=1 --time=1 true; then
        die "a test step (srun --nodes=$NODES true) failed: see $DIR/log/"
    fi
    say "running: $NODES nodes (node1..node$NODES), $CPUS CPUs, $GPUS GPUs (stand-ins) and ${MEM_MB} MB each"
    status_lines
}

# --- stop -----------------------------------------------------------------------------------------

stop() {
    [[ $(id -u) == 0 ]] || die "needs root: run it with sudo"
    if [[ ! -f $DIR/started ]]; then say "not running (nothing was started by this script)"; remove_hosts; return 0; fi
    if alive "$(pid_of slurmctld)" slurmctld; then
        scancel --full --quiet --user=root 2>/dev/null || true
        wait_for 10 queue_empty || true
    fi
    local name comm pid pids=() i
    # slurmd first (they end their job steps), then the controller, then munge
    for group in slurmd slurmctld munged; do
        pids=()
        while read -r name comm; do
            [[ $comm == "$group" ]] || continue
            [[ $name == munged && ! -f $DIR/run/munged.ours ]] && continue
            pid=$(pid_of "$name")
            alive "$pid" "$comm" && pids+=("$pid")
        done < <(daemons)
        ((${#pids[@]})) || continue
        kill -TERM "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 75; i++)); do
            local left=()
            for pid in "${pids[@]}"; do alive "$pid" "$group" && left+=("$pid"); done
            ((${#left[@]})) || break
            sleep 0.2
        done
        for pid in "${pids[@]}"; do alive "$pid" "$group" && kill -KILL "$pid" 2>/dev/null; done
    done
    remove_hosts
    rm -f "$DIR/started" "$DIR/run/"*.pid "$DIR/run/munged.ours"
    say "stopped"
}

# --- status ---------------------------------------------------------------------------------------

status_lines() {
    sinfo -N -o '  %10N %8T %6c %10G %m' 2>/dev/null
    local queued
    queued=$(squeue -h 2>/dev/null | wc -l)
    say "jobs in the queue: $queued"
}

status() {
    if all_running && sinfo -h >/dev/null 2>&1; then
        say "running: $(node_count) nodes, logs in $DIR/log"
        status_lines
        return 0
    fi
    if [[ -f $DIR/started ]]; then say "partly running (run start again to restart it, or stop)"; else say "stopped"; fi
    return 3
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    -h | --help | help) usage 0 ;;
    *) usage 2 >&2 ;;
esac
