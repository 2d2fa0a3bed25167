#!/usr/bin/env bash
# Train effcomp on a Cloud TPU VM pod slice: one process per TPU host, all started at once.
#
#   export NAME=effcomp-v4 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 PROJECT=my-project
#   launch/tpu_pod.sh create                 # create the slice (or reuse one named $NAME)
#   launch/tpu_pod.sh setup                  # copy this checkout to every worker, install
#   launch/tpu_pod.sh run -- --config=configs/demo.py --workdir=gs://my-bucket/demo
#   launch/tpu_pod.sh delete
#
# `run` starts `EFFCOMP_DISTRIBUTED=1 python experiments/train.py <args>` on every worker;
# jax.distributed.initialize() finds the other hosts of the slice by itself. The workdir
# must be visible to every worker (a gs:// bucket), because all hosts write checkpoints.
# `run` streams every worker's output and ends with the training; start it inside tmux or
# screen so that a dropped connection does not stop the run (a rerun resumes it anyway).
# `DRY_RUN=1` prints the commands instead of running them. See `launch/tpu_pod.sh --help`.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_pod.sh [options] create|setup|run|delete [-- train args]

  create   create the TPU VM slice $NAME (reused if it already exists)
  setup    copy this checkout (git archive of HEAD plus uncommitted changes to tracked
           files) to every worker and install it there into ~/effcomp/.venv
  run      run experiments/train.py on every worker; pass its flags after `--`, at least
           --config=... and --workdir=gs://bucket/path (shared by all workers)
  delete   delete the slice

options (or environment variables):
  --name=NAME                  NAME              TPU VM name (required)
  --zone=ZONE                  ZONE              e.g. us-central2-b (required)
  --project=PROJECT            PROJECT           default: gcloud's configured project
  --accelerator-type=TYPE      ACCELERATOR_TYPE  default: v4-32
  --runtime-version=VERSION    RUNTIME_VERSION   default: chosen from the TPU generation
                               SPOT=1            create a Spot slice (create)
                               REMOTE_DIR        checkout on the workers, default: effcomp
                               TRAIN_ENV         extra VAR=value words for `run`, e.g.
                                                 TRAIN_ENV='EFFCOMP_DATA_DIR=/mnt/tfds'
                               DRY_RUN=1         print the commands, run nothing

example:
  NAME=effcomp-v4 ZONE=us-central2-b launch/tpu_pod.sh run -- \
      --config=configs/demo.py --workdir=gs://my-bucket/demo --config.train.steps=1000
EOF
}

die_usage() {
  echo "tpu_pod.sh: $*" >&2
  usage | sed -n 1p >&2  # sed reads all of it: no SIGPIPE under pipefail
  echo "(launch/tpu_pod.sh --help explains each subcommand and option)" >&2
  exit 2
}

NAME=${NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-}
REMOTE_DIR=${REMOTE_DIR:-effcomp}
TRAIN_ENV=${TRAIN_ENV:-}
DRY_RUN=${DRY_RUN:-0}
JAX_VERSION=0.10.2  # the jax pinned in constraints.txt
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

command=""
train_args=()
while (($#)); do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --accelerator-type=*) ACCELERATOR_TYPE=${1#*=} ;;
    --runtime-version=*) RUNTIME_VERSION=${1#*=} ;;
    create|setup|run|delete)
      [[ -z "$command" ]] || die_usage "more than one subcommand: $command, $1"
      command=$1 ;;
    --)
      [[ "$command" == run ]] || die_usage "train args after '--' are for 'run' only"
      shift
      train_args=("$@")
      break ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
  shift
done

[[ -n "$command" ]] || die_usage "missing subcommand (create, setup, run or delete)"
[[ -n "$NAME" ]] || die_usage "missing --name=NAME (or \$NAME): the TPU VM's name"
[[ -n "$ZONE" ]] || die_usage "missing --zone=ZONE (or \$ZONE), e.g. us-central2-b"

if [[ -z "$RUNTIME_VERSION" ]]; then
  # The TPU software image for each generation (cloud.google.com/tpu/docs/runtimes).
  case "$ACCELERATOR_TYPE" in
    v5litepod-*|v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
  esac
fi

# `tpu-vm <verb> NAME` flags shared by every gcloud call.
where=(--zone="$ZONE")
[[ -z "$PROJECT" ]] || where+=(--project="$PROJECT")

# One word as the shell reads it: as is if safe, else single-quoted (only the value of
# a --flag=value word, which reads better: --command='cd ~/effcomp && ...').
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Runs a command, or with DRY_RUN=1 prints it (quoted, copy-pasteable) instead.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    local words=() word
    for word in "$@"; do words+=("$(quote "$word")"); done
    echo "${words[*]}"
  else
    "$@"
  fi
}

tpu_exists() {
  if [[ "$DRY_RUN" == 1 ]]; then
    run gcloud compute tpus tpu-vm describe "$NAME" "${where[@]}" --format='value(state)'
    return 1  # show the create command too
  fi
  gcloud compute tpus tpu-vm describe "$NAME" "${where[@]}" --format='value(state)' >/dev/null 2>&1
}

cmd_create() {
  if tpu_exists; then
    echo "tpu_pod.sh: reusing TPU VM $NAME in $ZONE" >&2
    return
  fi
  local flags=(--accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  [[ "${SPOT:-0}" != 1 ]] || flags+=(--spot)
  run gcloud compute tpus tpu-vm create "$NAME" "${where[@]}" "${flags[@]}"
}

cmd_setup() {
  local archive_ref untracked
  TARBALL=$(mktemp "${TMPDIR:-/tmp}/effcomp-XXXXXX.tar.gz")
  trap 'rm -f "$TARBALL"' EXIT
  # `git stash create` commits the working tree's changes to tracked files without touching
  # the checkout; it prints nothing when there are none, and then HEAD is what we copy.
  archive_ref=$(git -C "$REPO_ROOT" stash create)
  untracked=$(git -C "$REPO_ROOT" ls-files --others --exclude-standard | wc -l)
  if ((untracked > 0)); then
    echo "tpu_pod.sh: note: $untracked untracked file(s) are not copied (git add them)" >&2
  fi
  run git -C "$REPO_ROOT" archive --format=tar.gz -o "$TARBALL" "${archive_ref:-HEAD}"
  # The copy has no .git: record the commit for the runs' records (effcomp/train/run_info.py).
  local commit
  commit="$(git -C "$REPO_ROOT" rev-parse HEAD)${archive_ref:+-dirty}"
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:effcomp.tar.gz" --worker=all "${where[@]}"
  # effcomp needs Python >= 3.11 (the pins in constraints.txt); TPU images on Ubuntu 22.04
  # ship 3.10, so install 3.11 from the Ubuntu archive where it is missing. The old
  # checkout is replaced but its .venv kept, so a re-run only updates what changed.
  local remote
  remote=$(cat <<EOF
set -euo pipefail
if ! command -v python3.11 >/dev/null; then
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
fi
mkdir -p ~/$REMOTE_DIR && cd ~/$REMOTE_DIR
find . -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
tar -xzf ~/effcomp.tar.gz && rm ~/effcomp.tar.gz
echo $commit > .effcomp_commit
test -x .venv/bin/python || python3.11 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -c constraints.txt -e . 'jax[tpu]==$JAX_VERSION'
.venv/bin/python -c 'import effcomp, jax; print("effcomp installed with jax", jax.__version__)'
EOF
)
  run gcloud compute tpus tpu-vm ssh "$NAME" "${where[@]}" --worker=all --command="$remote"
}

cmd_run() {
  local has_config=0 has_workdir=0 workdir="" arg
  for arg in "${train_args[@]}"; do
    case "$arg" in
      --config=*|--config) has_config=1 ;;
      --workdir=*) has_workdir=1; workdir=${arg#--workdir=} ;;
      --workdir) has_workdir=1 ;;
    esac
  done
  ((has_config)) || die_usage "run needs --config=... after '--'"
  ((has_workdir)) || die_usage "run needs --workdir=gs://bucket/path after '--'"
  if [[ -n "$workdir" && "$workdir" != gs://* ]]; then
    echo "tpu_pod.sh: warning: --workdir=$workdir is not a gs:// path; every worker must" \
         "see the same workdir" >&2
  fi
  local args=() remote
  for arg in "${train_args[@]}"; do args+=("$(quote "$arg")"); done
  remote="cd ~/$REMOTE_DIR && ${TRAIN_ENV:+$TRAIN_ENV }EFFCOMP_DISTRIBUTED=1"
  remote+=" .venv/bin/python experiments/train.py ${args[*]}"
  run gcloud compute tpus tpu-vm ssh "$NAME" "${where[@]}" --worker=all --command="$remote"
}

cmd_delete() {
  run gcloud compute tpus tpu-vm delete "$NAME" "${where[@]}"
}

"cmd_$command"
