#!/usr/bin/env bash
# SMoE on M15 (paper Table 2): the SMoE reference's runs/run_m15.sh with Strata.
#
#   sbatch jobs/run_m15.sh SAVE_PATH MOE_TYPE TOTAL_EXPERT_NUM STRATA EXPERTS_PER_STRATUM [--set key=value ...]
#   bash   jobs/run_m15.sh ...                  (without Slurm: one process, or NPROC=N with mpirun)
#   e.g.   sbatch jobs/run_m15.sh tmp base 16 2 4,12     SMoE-4-12
#          sbatch jobs/run_m15.sh tmp base 0 0           dense baseline
#          sbatch jobs/run_m15.sh tmp cmr 16 0           MoE+CMR (plain MoE layer)
#
# MOE_TYPE base | eom | cmr; STRATA 0 = a plain MoE layer (the reference's
# --hmoe-layer 0), cmr needs STRATA <= 1; EXPERTS_PER_STRATUM must sum to
# TOTAL_EXPERT_NUM. Data: DATA_DIR = the unzipped m15.zip (default data/m15);
# hyper-parameters: jobs/configs/m15.yaml. Preemption: SIGUSR1 180 s before the
# time limit -> checkpoint -> requeue -> resume. Evaluation: jobs/evaluate.sh
# SAVE_PATH (or EVALUATE=1). Guide: docs/cluster.md, docs/reproduce.md.
#
# The paper's machine: 4 nodes x 8 GPUs, one process per GPU. Options given to
# sbatch override these lines (e.g. sbatch --nodes=1 --gpus-per-node=4 ...).
#SBATCH --job-name=strata-m15
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --mem=256G
#SBATCH --time=3-00:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
SCRIPT=run_m15.sh
# Under sbatch this file runs from a copy in Slurm's spool directory: find the checkout.
for ROOT in "${STRATA_ROOT:-}" "$(dirname "$0")/.." \
    "$( [[ -n ${SLURM_JOB_ID:-} ]] && scontrol show job "$SLURM_JOB_ID" 2> /dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | xargs -r dirname | xargs -r dirname)" \
    "${SLURM_SUBMIT_DIR:-}" .; do
  [[ -n $ROOT && -f $ROOT/jobs/lib/common.sh ]] && break
done
[[ -f $ROOT/jobs/lib/common.sh ]] || { echo "$SCRIPT: error: cannot find the Strata checkout; set STRATA_ROOT" >&2; exit 1; }
ROOT=$(cd "$ROOT" && pwd)
source "$ROOT/jobs/lib/common.sh"
source "$ROOT/jobs/lib/datasets.sh"
source "$ROOT/jobs/lib/reference_job.sh"
install_signal_traps
reference_job m15 "$@"
