#!/usr/bin/env bash
# Starts one training process of a (possibly multi-process) job:
#   bash jobs/lib/rank_exec.sh PROGRAM ARGS...
# run_training puts it between the launcher (srun/mpirun) and strata-train.
#  - srun without an MPI plugin starts N unrelated processes that would each
#    train alone into the same save_dir: refuse, naming the fix.
#  - One GPU per process: when the node shows several GPUs to every process
#    (--gpus-per-node, or no Slurm GPU binding), CUDA_VISIBLE_DEVICES is cut to
#    the one of this process's node-local rank. BIND_GPU=0 turns this off;
#    a process that already sees one GPU is left alone.
set -euo pipefail

if [[ ${STRATA_LAUNCHER:-} == srun && ${SLURM_STEP_NUM_TASKS:-1} -gt 1 ]] \
   && [[ -z ${PMIX_RANK:-}${PMI_RANK:-}${OMPI_COMM_WORLD_RANK:-}${PMI_SIZE:-} ]]; then
  if [[ ${SLURM_PROCID:-0} -eq 0 ]]; then
    echo "rank_exec: error: srun started ${SLURM_STEP_NUM_TASKS} tasks without an MPI plugin (no PMIx/PMI variables); set SRUN_MPI=pmix (or pmi2, see srun --mpi=list) or MpiDefault in slurm.conf" >&2
  fi
  exit 1
fi

local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-${MPI_LOCALRANKID:-${MV2_COMM_WORLD_LOCAL_RANK:-0}}}}
if [[ ${BIND_GPU:-1} != 0 ]]; then
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
  elif command -v nvidia-smi > /dev/null; then
    mapfile -t gpus < <(nvidia-smi --query-gpu=index --format=csv,noheader 2> /dev/null || true)
  else
    gpus=()
  fi
  if [[ ${#gpus[@]} -gt 1 ]]; then
    export CUDA_VISIBLE_DEVICES=${gpus[$((local_rank % ${#gpus[@]}))]// /}
  fi
fi
exec "$@"
