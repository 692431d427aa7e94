#!/bin/bash
# The table on SLURM: the (run, fold) trainings as one job array, then evaluate.py once every one of them has
# succeeded. From the repository, with its venv active and the features extracted into WORKDIR:
#   slurm/submit.sh --workdir WORKDIR [--runs 10] [--folds "1 2 3 4 5"] [--epochs N] [--loss mse] [--resume]
#                   [--config FILE] [--set NAME=VALUE ...] [--tasks LIST --snapshot DIR]
#                   [-- sbatch options of the trainings, e.g. --gres=gpu:1 --time=02:00:00]
# What the jobs run is fixed here: the code, the fold lists and the workdir's experiment (with --config, --set,
# --epochs and --loss on top: --set MAX_EPOCHS=N and LOSS=...; without them the experiment's) are copied into
# WORKDIR/snapshots/<id>/ (python runtime.py), and every job runs that copy, so editing config.py, an experiment
# file or the code after this returns changes no queued job.
# --tasks 7,12: only these array tasks (those of a failed array: slurm/failed.sh ARRAY_JOB_ID), with --resume;
# --snapshot DIR: the snapshot of the first submission (the command printed below gives it).
# Partition and account of both jobs: SBATCH_PARTITION=... SBATCH_ACCOUNT=... (sbatch reads them itself).
# Logs: WORKDIR/slurm-logs/. WORKDIR must be on a file system that the compute nodes share.
set -euo pipefail
usage() { sed -n '2,14p' "$0" >&2; exit 2; }
workdir='' runs=10 folds='1 2 3 4 5' tasks='' snapshot='' resume=() settings=()
while [ $# -gt 0 ]; do
    case "$1" in
        --workdir) workdir=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --folds) folds=$2; shift 2 ;;
        --epochs) settings+=(--set "MAX_EPOCHS=$2"); shift 2 ;;
        --loss) settings+=(--set "LOSS=$2"); shift 2 ;;
        --config|--set) settings+=("$1" "$2"); shift 2 ;;
        --tasks) tasks=$2; resume=(--resume); shift 2 ;;
        --snapshot) snapshot=$2; shift 2 ;;
        --resume) resume=(--resume); shift ;;
        --) shift; break ;;
        *) usage ;;
    esac
done
[ -n "$workdir" ] || usage
workdir=$(realpath -m "$workdir")
cd "$(dirname "$0")/.."                                  # the repository
if [ ! -f "$workdir/features/manifest.json" ]; then
    echo "error: $workdir/features/manifest.json: features not extracted yet; run first:" >&2
    echo "  python extract_features.py --data-root DATA_ROOT --workdir $workdir" >&2
    exit 1
fi
if [ -n "$snapshot" ]; then
    if [ ${#settings[@]} -gt 0 ]; then
        echo "error: --snapshot runs that snapshot's experiment: no --config, --set, --epochs or --loss with it" >&2
        exit 2
    fi
    if [ ! -f "$snapshot/settings.py" ]; then
        echo "error: $snapshot: not a snapshot of runtime.py (no settings.py)" >&2; exit 2
    fi
else
    snapshot=$(python runtime.py --workdir "$workdir" "${settings[@]}")
fi
snapshot=$(realpath "$snapshot")
read -ra fold_list <<< "$folds"
tasks=${tasks:-0-$((runs * ${#fold_list[@]} - 1))}
logs=$workdir/slurm-logs
mkdir -p "$logs"
array=$(sbatch --parsable --array="$tasks" --output="$logs/table-%A_%a.out" "$@" \
        slurm/table.sbatch "$workdir" "$snapshot" "$folds" "${resume[@]}")
array=${array%%;*}
# kill-on-invalid-dep: a failed training cancels the gather instead of leaving it pending forever.
gather=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes \
         --output="$logs/gather-%j.out" slurm/gather.sbatch "$workdir" "$snapshot")
gather=${gather%%;*}
echo "trainings: job array $array (tasks $tasks), gather: job $gather; logs in $logs; code and experiment: $snapshot"
echo "if trainings fail (the gather is then cancelled), rerun only those, then the gather:"
echo "  slurm/submit.sh --workdir $workdir --runs $runs --folds \"$folds\" --snapshot $snapshot" \
     "--tasks \$(slurm/failed.sh $array)${*:+ -- $*}"
