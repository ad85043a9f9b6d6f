#!/usr/bin/env bash
# A throw-away one-node Slurm cluster on this machine, for tests and for trying
# the job files by hand: munged, slurmctld and slurmd as root, every file
# (config, key, sockets, state, spool, logs) under one directory.
#
#   bash test/slurm/cluster.sh start DIR [CPUS]   # prints: export SLURM_CONF=DIR/slurm.conf
#   bash test/slurm/cluster.sh stop DIR           # cancels the jobs, stops the daemons
#   source test/slurm/cluster.sh                  # the functions below, for test/e2e/slurm.sh
#
# Needs root and Debian's slurm-wlm and munge (slurm_install installs them with
# apt-get when missing). Known to work with Slurm 22.05 (bookworm) under gVisor:
# proctrack/linuxproc and task/none (no cgroups), select/cons_tres, SlurmUser=root.
# Every wait has a timeout: a daemon that does not come up is an error, not a hang.

SLURM_BINARIES=(munged munge slurmctld slurmd sbatch srun scontrol squeue scancel sinfo)

slurm_log() { echo "  [slurm] $*"; }

# Installs slurm-wlm and munge when a program is missing (idempotent).
slurm_install() {
  local b missing=()
  for b in "${SLURM_BINARIES[@]}"; do command -v "$b" > /dev/null || missing+=("$b"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || { slurm_log "missing ${missing[*]} and not root: cannot install slurm-wlm munge"; return 1; }
  slurm_log "installing slurm-wlm and munge (missing: ${missing[*]})"
  local apt=(env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get -y -q -o Dpkg::Use-Pty=0)
  "${apt[@]}" install --no-install-recommends slurm-wlm munge > /tmp/strata-slurm-apt.log 2>&1 \
    || { "${apt[@]}" update >> /tmp/strata-slurm-apt.log 2>&1 \
         && "${apt[@]}" install --no-install-recommends slurm-wlm munge >> /tmp/strata-slurm-apt.log 2>&1; } \
    || { tail -n 5 /tmp/strata-slurm-apt.log; slurm_log "apt-get install slurm-wlm munge failed (log: /tmp/strata-slurm-apt.log)"; return 1; }
  for b in "${SLURM_BINARIES[@]}"; do command -v "$b" > /dev/null || { slurm_log "$b still missing after the install"; return 1; }; done
}

free_ports() {  # N free TCP ports on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_for() {  # SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.5 s
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 2; i++)); do
    "$@" > /dev/null 2>&1 && return 0
    sleep 0.5
  done
  slurm_log "timed out after ${secs} s waiting for $what"
  return 1
}

# slurm_start DIR [CPUS]: writes DIR/slurm.conf, starts the daemons, waits until
# the node is idle. Exports SLURM_CONF. On failure prints the daemons' last log lines.
slurm_start() {
  local dir=$1 cpus=${2:-$(nproc)} host ports
  mkdir -p "$dir"/{munge,munge-run,state,spool,log}
  chmod 700 "$dir/munge"
  chmod 755 "$dir/munge-run"
  host=$(hostname -s)
  read -r -a ports <<< "$(free_ports 2)"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  cat > "$dir/slurm.conf" <<EOF
# one-node test cluster (test/slurm/cluster.sh)
ClusterName=strata-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$dir/munge-run/munge.socket,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
KillWait=10
MinJobAge=600
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf
  munged --force --socket="$dir/munge-run/munge.socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
    || { slurm_log "munged did not start"; tail -n 5 "$dir/log/munged.log" 2> /dev/null; return 1; }
  wait_for 20 "munged" bash -c "munge -S '$dir/munge-run/munge.socket' -n | unmunge -S '$dir/munge-run/munge.socket'" \
    || { tail -n 5 "$dir/log/munged.log"; return 1; }
  slurmctld -f "$SLURM_CONF" || { slurm_log "slurmctld did not start"; tail -n 5 "$dir/log/slurmctld.log"; return 1; }
  wait_for 30 "slurmctld" scontrol ping || { tail -n 5 "$dir/log/slurmctld.log"; return 1; }
  slurmd -f "$SLURM_CONF" || { slurm_log "slurmd did not start"; tail -n 5 "$dir/log/slurmd.log"; return 1; }
  wait_for 40 "node $host to become idle" bash -c "sinfo -h -n '$host' -o %T | grep -qx idle" \
    || { sinfo; tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; return 1; }
  slurm_log "Slurm $(sinfo --version | cut -d' ' -f2) up: node $host, $cpus CPUs, SLURM_CONF=$SLURM_CONF"
}

session_of() {  # PID -> its session id (field 6 of /proc/PID/stat, read after the "(comm)")
  local stat
  stat=$(cat "/proc/$1/stat" 2> /dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086  # the fields, split on blanks
  set -- $stat
  echo "${4:-}"
}

pid_of_file() { [[ -f $1 ]] && cat "$1"; }

# stop_pid PID: TERM, then KILL after 10 s
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2> /dev/null || return 0
  kill "$pid" 2> /dev/null
  for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2> /dev/null || return 0; sleep 0.5; done
  kill -9 "$pid" 2> /dev/null || true
}

# slurm_stop DIR: cancels every job, ends processes the jobs left, stops the daemons.
slurm_stop() {
  local dir=$1 conf=$1/slurm.conf p jobs
  [[ -f $conf ]] || return 0
  export SLURM_CONF=$conf
  if [[ -f $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2> /dev/null; then
    jobs=$(timeout 10 squeue -h -o %i 2> /dev/null || true)
    if [[ -n $jobs ]]; then
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2> /dev/null || true
      wait_for 20 "jobs to end" bash -c '[[ -z $(squeue -h -o %i) ]]' || true
    fi
  fi
  # Job processes Slurm did not end: every slurmstepd of this cluster runs in its
  # log directory (slurmd's working directory) and leads the session of its job.
  local sids=() pid sid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $(cat "$p/comm" 2> /dev/null) == slurmstepd ]] || continue
    [[ $(readlink "$p/cwd" 2> /dev/null) == "$dir"/* ]] || continue
    sids+=("$(session_of "$pid")")
  done
  if [[ ${#sids[@]} -gt 0 ]]; then
    for p in /proc/[0-9]*; do
      pid=${p#/proc/}
      sid=$(session_of "$pid")
      if [[ -n $sid && " ${sids[*]} " == *" $sid "* ]]; then kill -9 "$pid" 2> /dev/null || true; fi
    done
  fi
  stop_pid "$(pid_of_file "$dir/slurmd.pid")"
  stop_pid "$(pid_of_file "$dir/slurmctld.pid")"
  stop_pid "$(pid_of_file "$dir/munged.pid")"
}

# job_field JOBID FIELD: a field of `scontrol show job` (e.g. JobState, Restarts, ExitCode)
job_field() {
  timeout 10 scontrol show job -o "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

# wait_job JOBID SECONDS: until the job has ended; prints its final state. Fails on timeout.
wait_job() {
  local id=$1 secs=$2 i st
  for ((i = 0; i < secs * 2; i++)); do
    st=$(job_field "$id" JobState)
    case $st in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)
        echo "$st"; return 0 ;;
    esac
    sleep 0.5
  done
  echo "TIMEOUT_WAITING($st)"
  return 1
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -uo pipefail
  case ${1:-} in
    start)
      [[ $# -ge 2 ]] || { echo "usage: $0 start DIR [CPUS]" >&2; exit 2; }
      slurm_install || exit 1
      dir=$(mkdir -p "$2" && cd "$2" && pwd)
      slurm_start "$dir" "${3:-}" || { slurm_stop "$dir"; exit 1; }
      echo "export SLURM_CONF=$dir/slurm.conf" ;;
    stop)
      [[ $# -ge 2 ]] || { echo "usage: $0 stop DIR" >&2; exit 2; }
      slurm_stop "$(cd "$2" && pwd)" ;;
    *) echo "usage: $0 start DIR [CPUS] | stop DIR" >&2; exit 2 ;;
  esac
fi
