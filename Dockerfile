# syntax=docker/dockerfile:1.7
# scorecam image. Every RUN step calls a committed script that CI also runs natively
# (scripts/ci/check_deploy.sh), because our machines have no Docker engine.
#
#   CPU:  docker build -t scorecam .
#   CUDA: docker build -t scorecam:cuda --build-arg ORT_VARIANT=gpu \
#           --build-arg RUNTIME_BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .
#         (onnxruntime-gpu 1.31.1 requires CUDA 13 and cuDNN 9, per its wheel metadata)

ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG ORT_VARIANT=cpu

# --- build: the release binary; cargo's registry and target dir are cached across builds
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src ./src
COPY benches ./benches
COPY openapi.yaml ./
COPY scripts/ci/build_release.sh ./scripts/ci/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/ci/build_release.sh /out

# --- onnxruntime: the pinned wheel's shared library, by the script the README uses
FROM python:3.11-slim AS onnxruntime
ARG ORT_VARIANT
WORKDIR /src
COPY scripts/setup/ort.sh ./scripts/setup/
RUN ORT_DEST=/opt/onnxruntime scripts/setup/ort.sh "${ORT_VARIANT}"

# --- runtime: slim, non-root, no shell needed
FROM ${RUNTIME_BASE} AS runtime
WORKDIR /app
COPY --from=build /out/scorecam /usr/local/bin/scorecam
COPY --from=onnxruntime /opt/onnxruntime /opt/onnxruntime
COPY models ./models
COPY config ./config
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    SCORECAM_BIND=0.0.0.0:8080 \
    SCORECAM_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/scorecam", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/scorecam"]
CMD ["serve"]
