# Two images from one file (docs/serving.md has the commands):
#   train    fine-tunes a zoo backbone on a GPU and exports it in TF Serving's layout
#            docker build --target train -t kcnn-train .
#   serving  TF Serving with one exported model baked in
#            docker build --target serving --build-arg MODEL_NAME=shapes_segmenter \
#                         --build-arg MODEL_DIR=models/shapes_segmenter -t kcnn-serving .
# This project's CI has no Docker engine: tests/test_dockerfile.py lints this file with hadolint and
# checks its stages, base images and COPY sources, but nothing here is built by the test suite.

# ---------------------------------------------------------------------------------------------------
# train: the official TensorFlow GPU image of the TensorFlow that constraints.txt pins
# (tensorflow/tensorflow tags are VERSION[-gpu][-jupyter]; the suite checks the two versions agree).
FROM tensorflow/tensorflow:2.21.0-gpu AS train

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/kcnn

# TensorFlow's own CUDA/cuDNN wheels (the and-cuda extra of the same, already installed TensorFlow),
# in a layer of its own so that code changes don't download them again.
COPY constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt "tensorflow[and-cuda]==2.21.0"

# kcnn itself, non-editable, with the versions the suite runs with (setup.py reads README.md).
COPY setup.py README.md ./
COPY kcnn/ kcnn/
RUN pip install --no-cache-dir -c constraints.txt .

COPY --chmod=755 docker/train_and_export.sh /usr/local/bin/train-and-export

# What the default command trains; --build-arg sets the image's defaults, docker run -e overrides them.
ARG BACKBONE=resnet18
ARG TASK=segmentation
ARG HEAD=unet
ARG DATASET=shapes
ARG EPOCHS=8
ARG MODEL_NAME=shapes_segmenter
ENV BACKBONE=${BACKBONE} \
    TASK=${TASK} \
    HEAD=${HEAD} \
    DATASET=${DATASET} \
    EPOCHS=${EPOCHS} \
    MODEL_NAME=${MODEL_NAME}

# Runs go to /runs/run, the exported model to /models/$MODEL_NAME/<version>: mount both
# (docker run --gpus all -v "$PWD/runs:/runs" -v "$PWD/models:/models" kcnn-train).
# Any other command runs instead: docker run ... kcnn-train kcnn evaluate /runs/run --dataset shapes
WORKDIR /workspace
CMD ["train-and-export"]

# ---------------------------------------------------------------------------------------------------
# serving: TF Serving of the same TensorFlow release (tensorflow/serving:2.21.0, the release that
# tensorflow-serving-api==2.21.0 in constraints.txt comes from; tags are VERSION[-gpu]).
# Its entrypoint already runs
#   tensorflow_model_server --port=8500 --rest_api_port=8501 \
#       --model_name=${MODEL_NAME} --model_base_path=/models/${MODEL_NAME} "$@"
# so copying a `kcnn export` directory (NAME/<version>/saved_model.pb ...) to /models/${MODEL_NAME}
# is all it takes; TF Serving replays assets.extra/tf_serving_warmup_requests when it loads it.
#
# Several models in one server: `kcnn export --models-config models` writes models/models.config,
# one entry per model with base_path /models/NAME (the path inside the container); mount or
# copy the whole tree and pass the file as the command, which the entrypoint appends to the server's
# flags (with --model_config_file the server ignores --model_name and --model_base_path):
#   docker run -p 8500:8500 -p 8501:8501 -v "$PWD/models:/models" kcnn-serving \
#       --model_config_file=/models/models.config --model_config_file_poll_wait_seconds=60
# or, baked into an image of its own:  COPY models /models
#                                      CMD ["--model_config_file=/models/models.config"]
FROM tensorflow/serving:2.21.0 AS serving

ARG MODEL_NAME=shapes_segmenter
# Written by `kcnn export RUN --out models/NAME`; not in the repository.
ARG MODEL_DIR=models/${MODEL_NAME}
ENV MODEL_NAME=${MODEL_NAME}

COPY ${MODEL_DIR} /models/${MODEL_NAME}

# 8500: gRPC (tensorflow.serving.PredictionService), 8501: REST (/v1/models/${MODEL_NAME}:predict)
EXPOSE 8500 8501
