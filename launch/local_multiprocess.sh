#!/usr/bin/env bash
# Runs N effcomp training processes on this machine, the way a multi-host job runs
# (one jax.distributed process per host), coordinated over 127.0.0.1.
#
#   launch/local_multiprocess.sh 2 --config=configs/demo.py --workdir=workdirs/mp
#
# Environment:
#   PORT                 coordinator port (default: a free one)
#   DEVICES_PER_PROCESS  virtual CPU devices per process (default 1)
#   LOG_DIR              per-process logs (default: <workdir>/logs or ./logs)
#   PYTHON               interpreter (default: .venv/bin/python if present, else python3)
# Process 0's output is shown; every process's output is in $LOG_DIR/process_<i>.log.
# Exits non-zero if any process fails, after stopping the others.
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 NUM_PROCESSES [experiments/train.py flags...]" >&2
  exit 2
fi
num_processes=$1
shift
cd "$(dirname "$0")/.."

python=${PYTHON:-$([[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3)}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
workdir=logs
for arg in "$@"; do
  [[ "$arg" == --workdir=* ]] && workdir=${arg#--workdir=}
done
log_dir=${LOG_DIR:-$workdir/logs}
mkdir -p "$log_dir"
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-1} ${XLA_FLAGS:-}"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup INT TERM

for ((i = 0; i < num_processes; i++)); do
  # Created here, not by the background child's redirection, so that `tail` below
  # never races the child to open it.
  : > "$log_dir/process_$i.log"
  "$python" experiments/train.py --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num_processes" --process_id="$i" "$@" >> "$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
tail -n +1 -f "$log_dir/process_0.log" --pid="${pids[0]}" &
tail_pid=$!

status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $log_dir/process_$i.log" >&2
    status=1
    cleanup
  fi
done
wait "$tail_pid" 2>/dev/null || true
exit $status
