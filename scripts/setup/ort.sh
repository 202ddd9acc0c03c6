#!/usr/bin/env bash
# Fetches the pinned ONNX Runtime shared library from its PyPI wheel and unpacks it into
# .ort/<variant>/ (git-ignored). Idempotent: a verified library already in place is kept.
#
#   scripts/setup/ort.sh            # CPU build  -> .ort/cpu/libonnxruntime.so.1.31.1
#   scripts/setup/ort.sh gpu        # CUDA build -> .ort/gpu/ (needs CUDA 13 + cuDNN 9 at run time (the wheel's own requirements))
#   ORT_DEST=/opt/ort scripts/setup/ort.sh   # another destination (the Docker image uses this)
#
# The wheel's sha256 is pinned: a different file from the index is an error, not a warning.
set -euo pipefail

ORT_VERSION=1.31.1
variant=${1:-cpu}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=${ORT_DEST:-$root/.ort/$variant}

case "$variant" in
  cpu)
    package=onnxruntime
    wheel=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
    sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
    libs=(libonnxruntime.so.${ORT_VERSION})
    ;;
  gpu)
    package=onnxruntime-gpu
    wheel=onnxruntime_gpu-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
    sha256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
    libs=(libonnxruntime.so.${ORT_VERSION} libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so)
    ;;
  *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac

marker="$dest/.sha256"
if [[ -f "$marker" && "$(cat "$marker")" == "$sha256" && -f "$dest/${libs[0]}" ]]; then
  echo "ONNX Runtime $ORT_VERSION ($variant) already in $dest"
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "error: $python is needed to fetch the wheel" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $wheel from PyPI"
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  -d "$tmp" "$package==$ORT_VERSION"
[[ -f "$tmp/$wheel" ]] || { echo "error: expected $wheel, got: $(ls "$tmp")" >&2; exit 1; }

actual=$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)
if [[ "$actual" != "$sha256" ]]; then
  echo "error: sha256 of $wheel is $actual, pinned $sha256" >&2
  exit 1
fi

mkdir -p "$dest"
"$python" - "$tmp/$wheel" "$dest" "${libs[@]}" <<'PY'
import sys, zipfile, os
wheel, dest, *libs = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for lib in libs:
        data = z.read(f"onnxruntime/capi/{lib}")
        path = os.path.join(dest, lib)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
echo "$sha256" > "$marker"
echo "ONNX Runtime $ORT_VERSION ($variant) installed in $dest"
