#!/bin/bash
# Composer's launcher in one pod of a Kubeflow PyTorchJob: G training processes (one per GPU) of a world of
# N pods x G GPUs. The container's command (docs/launching.md, "Kubernetes"; scripts/kubernetes/pytorchjob.yaml
# runs it), from the repository's root:
#
#   bash scripts/kubernetes/train.sh N G yamls/a2.yaml data.path=/data/imagenet run_dir=/runs/a2
#
# The training operator sets MASTER_ADDR and MASTER_PORT (the Master pod's service) and RANK (this pod's number:
# 0 for the Master, 1, 2, ... for the Workers), which are the launcher's node rank; the world size is given
# here, since the operator's WORLD_SIZE counts pods (or pods x nprocPerNode, depending on its version).
#
# Kubernetes stops a pod (deletion, preemption, eviction) by sending SIGTERM to the container's first process
# only, and Composer's launcher passes no signal on to its training processes: this script traps SIGTERM and
# hands it to them, and they finish the batch, save a checkpoint and exit 0 (docs/resuming.md). Give the pod a
# terminationGracePeriodSeconds long enough for that. Restarted, the same command resumes from run_dir.
set -u
if [ $# -lt 3 ]; then
  echo "usage: $0 PODS GPUS_PER_POD CONFIG [dotted.key=value ...]" >&2
  exit 2
fi
for name in RANK MASTER_ADDR MASTER_PORT; do
  if [ -z "${!name:-}" ]; then
    echo "error: $name is not set: run this as the command of a PyTorchJob's pods (it sets it)" >&2
    exit 2
  fi
done
pods=$1
gpus=$2
shift 2

composer -n "$gpus" --world_size $((pods * gpus)) --node_rank "$RANK" --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" rsb_composer/train.py "$@" &
launcher=$!
trap 'pkill -TERM -P "$launcher"' TERM  # the launcher's children: the training processes (pkill: procps)
while kill -0 "$launcher" 2>/dev/null; do
  wait "$launcher"  # returns early when SIGTERM arrives; keep waiting for the launcher
done
wait "$launcher"
