#!/usr/bin/env bash
# Pretrain the residual compact prior on one CUDA GPU with the CPU recipe (experiment=pretrain_cpu) unchanged
# except the batch, the data workers and bf16 autocast, then export its EMA generator (fp16 safetensors).
#
#   scripts/pretrain_prior_gpu.sh OUT_DIR FACES_DIR [FACES_DIR ...] [-- extra Hydra overrides]
#   BATCH=32 WORKERS=8 ITERATIONS=20000 scripts/pretrain_prior_gpu.sh /tmp/prior ../shared/data/pretrain/congress \
#       ../shared/data/pretrain/utkface -- optim.lr_g=2e-3
#
# FACES_DIR: photo folders as for the CPU run (faces are detected, aligned and cached on first use: ~5 min for
# 11k photos). Writes OUT_DIR/runs/prior_compact_256/<date>/ (checkpoints, logs, curves) and OUT_DIR/export/
# (gpen-compact-256-gpu.safetensors + model card). An interrupted run resumes with the command it prints.
# GPEN_DRY_RUN=1 only composes and prints the training config (no GPU needed): how the tests check it.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 OUT_DIR FACES_DIR [FACES_DIR ...] [-- overrides]" >&2
  exit 2
fi
out=$1; shift
dirs=(); extra=()
while [[ $# -gt 0 ]]; do
  if [[ $1 == "--" ]]; then shift; extra=("$@"); break; fi
  [[ -d $1 ]] || { echo "$0: faces folder not found: $1" >&2; exit 2; }
  dirs+=("$(cd "$1" && pwd)"); shift
done
root=$(cd "$(dirname "$0")/.." && pwd)
faces=$(IFS=,; echo "[${dirs[*]}]")
args=(experiment=pretrain_cpu "data.faces_dir=$faces" data.val_count=200
      trainer.accelerator=gpu trainer.precision=bf16-mixed trainer.benchmark=true
      "data.batch_size=${BATCH:-32}" "data.num_workers=${WORKERS:-8}" data.pin_memory=true
      "data.samples_per_epoch=$(( ${BATCH:-32} * 100 ))" "iterations=${ITERATIONS:-20000}" val_every=1000
      "paths.log_dir=$out/runs" logger=csv)
cd "$root"
if [[ ${GPEN_DRY_RUN:-0} == 1 ]]; then
  exec python train.py "${args[@]}" "${extra[@]}" --cfg job
fi
python train.py "${args[@]}" "${extra[@]}"
run=$(ls -dt "$out"/runs/prior_compact_256/*/ | head -1)
python scripts/export_prior.py "$run" --name gpen-compact-256-gpu --out "$out/export"
echo "exported $out/export (from $run)"
