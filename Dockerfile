# syntax=docker/dockerfile:1
# openfal's container image.
#
#   docker build -t openfal:gpu .                          # CUDA runtime, torch's CUDA build, [gpu] extra
#   docker build --build-arg VARIANT=cpu -t openfal:cpu .  # CPU only: `serve --demo`, API nodes
#
# One image serves every role: `serve` (the default command), `serve --no-workers`
# (API nodes), `worker --models ...` (a GPU pool), `migrate`. Its install step is
# deploy/install.sh, which CI also runs (deploy/check-install.sh); the image itself
# has not been built in CI, which has no Docker daemon.
ARG VARIANT=gpu
# torch 2.13's CUDA build is for CUDA 13.0 (deploy/install.sh picks the matching wheel index)
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG CPU_IMAGE=ubuntu:24.04

FROM ${CUDA_IMAGE} AS base-gpu
FROM ${CPU_IMAGE} AS base-cpu

# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM base AS build
ARG VARIANT
# empty: the PyTorch wheel index deploy/install.sh names for the variant
ARG TORCH_INDEX_URL=
COPY pyproject.toml README.md /src/
COPY src /src/src
COPY deploy/install.sh /src/deploy/install.sh
RUN if [ "$VARIANT" = cpu ]; then cpu=--cpu; else cpu=; fi \
    && sh /src/deploy/install.sh $cpu --torch-index "$TORCH_INDEX_URL" /opt/openfal /src

FROM base
# a fixed non-root uid, so volumes and Kubernetes' runAsUser/fsGroup agree
RUN groupadd --gid 10001 openfal \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/openfal openfal \
    && mkdir -p /data /models /cache \
    && chown openfal:openfal /data /models /cache
COPY --from=build /opt/openfal /opt/openfal
# /data: SQLite file, local media, demo key (unused with PostgreSQL and S3)
# /models: model folders (`openfal models download`) and the Hugging Face cache
# /cache: compiled kernels (a restart's warm-up reads them instead of compiling) and downloaded LoRAs
ENV PATH=/opt/openfal/bin:$PATH \
    OPENFAL_DATA_DIR=/data \
    OPENFAL_MODELS_DIR=/models \
    HF_HOME=/models/huggingface \
    OPENFAL_COMPILE_CACHE_DIR=/cache/compile \
    OPENFAL_LORA_CACHE_DIR=/cache/loras \
    OPENFAL_WORKER_PORT=8000
VOLUME ["/data", "/models", "/cache"]
USER 10001:10001
WORKDIR /home/openfal
EXPOSE 8000
# `serve` and `worker --port` both answer /health/ready on 8000: 503 while models warm
# up (compiling can take minutes, hence the start period) or while a worker drains
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
ENTRYPOINT ["openfal"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
