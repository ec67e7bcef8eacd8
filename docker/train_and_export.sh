#!/usr/bin/env bash
# train-and-export, the default command of the Dockerfile's `train` image: fine-tune a zoo backbone,
# then export it in TF Serving's layout. Once pipelines exist, a pipeline YAML
# (`kcnn run pipelines/...`) replaces this script.
#
# Configured by the environment (the image's defaults in brackets; docker run -e NAME=VALUE):
#   BACKBONE [resnet18]  TASK [segmentation]  HEAD [unet; empty: the task's default head]
#   DATASET [shapes]     EPOCHS [8]           MODEL_NAME [shapes_segmenter]
#   RUN_DIR [/runs/run]  MODEL_BASE [/models]: the model goes to $MODEL_BASE/$MODEL_NAME/<version>
# Arguments are passed on to `kcnn finetune`:  docker run ... kcnn-train train-and-export --seed 1
set -euo pipefail

run_dir="${RUN_DIR:-/runs/run}"
model_base="${MODEL_BASE:-/models}"
head_args=()
if [[ -n "${HEAD:-}" ]]; then
    head_args=(--head "$HEAD")
fi

# --resume: a second run of the container (same RUN_DIR) continues the run instead of failing on it
kcnn finetune --backbone "$BACKBONE" --task "$TASK" "${head_args[@]}" --dataset "$DATASET" \
    --epochs "$EPOCHS" --out "$run_dir" --resume "$@"
kcnn export "$run_dir" --out "$model_base/$MODEL_NAME"
