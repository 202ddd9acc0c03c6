#!/usr/bin/env bash
# Deployment checks, natively (no Docker engine here): lint the Dockerfile, validate every
# Kubernetes manifest against the Kubernetes schemas (overlays rendered first), run the
# image's set-up scripts, then start the built binary the way the image's entrypoint does
# and pass its HEALTHCHECK command.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

source scripts/setup/venv.sh
venv=.venv-deploy
ensure_venv "$venv" scripts/ci/requirements_deploy.txt

echo "== hadolint"
"$venv/bin/hadolint" Dockerfile

echo "== kubernetes manifests"
work=$(mktemp -d)
server=""
cleanup() { [[ -n "$server" ]] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  "$venv/bin/python" scripts/ci/render_overlay.py "$overlay" > "$work/$name.yaml"
  "$venv/bin/kubernetes-validate" --strict -k 1.33.0 "$work/$name.yaml"
  grep -q "nvidia.com/gpu" "$work/$name.yaml" && echo "$name requests a GPU"
done
"$venv/bin/kubernetes-validate" --strict -k 1.33.0 deploy/kubernetes/base/{deployment,service,hpa,pdb}.yaml
"$venv/bin/kubernetes-validate" --strict -k 1.33.0 deploy/kubernetes/jobs/*.yaml

echo "== image set-up scripts (natively)"
ORT_DEST="$work/onnxruntime" scripts/setup/ort.sh cpu
scripts/ci/build_release.sh "$work/bin"

echo "== the entrypoint and its HEALTHCHECK"
export ORT_DYLIB_PATH="$work/onnxruntime/libonnxruntime.so.1.31.1"
export SCORECAM_BIND=127.0.0.1:18097 SCORECAM_LOG_FORMAT=json
"$work/bin/scorecam" serve 2> "$work/serve.log" &
server=$!
healthy=""
for _ in $(seq 1 120); do   # the image's start period is 60 s
  if "$work/bin/scorecam" healthcheck; then healthy=yes; break; fi
  sleep 0.5
done
[[ -n "$healthy" ]] || { cat "$work/serve.log"; echo "HEALTHCHECK never passed" >&2; exit 1; }
echo "HEALTHCHECK passed"

echo "== the dataset Jobs' pods, run here (self-contained workers, then clients of the server)"
mkdir -p "$work/dataset/in/sub"
cp samples/chelsea.png "$work/dataset/in/"
cp tests/fixtures/reference/*.png "$work/dataset/in/sub/"
"$venv/bin/python" scripts/ci/run_dataset_job.py deploy/kubernetes/jobs/explain-dataset.yaml \
  "$work/bin/scorecam" "$work/dataset/in" "$work/dataset/out-workers"
"$venv/bin/python" scripts/ci/run_dataset_job.py deploy/kubernetes/jobs/explain-dataset-client.yaml \
  "$work/bin/scorecam" "$work/dataset/in" "$work/dataset/out-clients" --server "http://$SCORECAM_BIND"
kill -TERM "$server"
wait "$server"
server=""
echo "server drained and exited 0"
if "$work/bin/scorecam" healthcheck 2>/dev/null; then echo "healthcheck passed with no server" >&2; exit 1; fi

echo "== the GPU configuration refuses to start without CUDA (policy = require)"
if SCORECAM_CONFIG=config/gpu.toml "$work/bin/scorecam" models > "$work/gpu.out" 2>&1; then
  echo "config/gpu.toml started without a GPU" >&2; exit 1
fi
grep -q "execution provider cuda is not available" "$work/gpu.out"
echo "deploy checks passed"
