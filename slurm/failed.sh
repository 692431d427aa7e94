#!/bin/bash
# The tasks of a job array that ended without success (failed, cancelled, timed out, out of memory, node
# failure), as the list that slurm/submit.sh --tasks and sbatch --array take:
#   slurm/failed.sh ARRAY_JOB_ID          # prints e.g. 7,12 (nothing when every task succeeded)
# scontrol knows a job for MinJobAge seconds after its end (300 by default); sacct afterwards, where the
# cluster keeps accounting.
set -euo pipefail
job=${1:?usage: slurm/failed.sh ARRAY_JOB_ID}
if pairs=$(scontrol -o show job "$job" 2>/dev/null); then
    pairs=$(tr ' ' '\n' <<< "$pairs" | awk -F= '$1 == "ArrayTaskId" {task = $2} $1 == "JobState" {print task, $2}')
else
    pairs=$(sacct -X -n -P -j "$job" -o JobID,State | awk -F'|' '{split($1, id, "_"); split($2, s, " "); print id[2], s[1]}')
fi
awk '$2 ~ /^(FAILED|CANCELLED|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|BOOT_FAIL|DEADLINE|PREEMPTED)$/ {print $1}' <<< "$pairs" |
    sort -n | paste -sd, -
