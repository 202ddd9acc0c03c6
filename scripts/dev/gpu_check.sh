#!/usr/bin/env bash
# The CUDA path, checked on a machine with an NVIDIA GPU: the release binary with
# provider.kind = "cuda", policy = "require" must give the CPU's maps (max |Δ| <= 1e-4) for
# the reference photos with every preset, and exact Score-CAM is timed at batch sizes 8-64.
#
#   scripts/dev/gpu_check.sh pack [--part-mib N] [--with-model DIR]...   # here: the kit, in parts
#   scripts/dev/gpu_check.sh receive                                     # there, every call: stash the carried parts
#   scripts/dev/gpu_check.sh assemble                                    # there: join, check sha256, unpack
#   scripts/dev/gpu_check.sh models                                      # there (optional): ResNet-50, ViT-B/16
#   scripts/dev/gpu_check.sh run [--cpu-only] [--models a,b] [--batches "8 16 32 64"] [--out DIR]
#   scripts/dev/gpu_check.sh dry-run                                     # here: all of it but the GPU
#
# The kit (target/gpu-kit/): ONNX Runtime 1.31.1's CUDA build (libonnxruntime.so.1.31.1,
# libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so: 284 MB, from the
# pinned PyPI wheel onnxruntime-gpu==1.31.1 that scripts/setup/ort.sh gpu fetches and checks),
# the release binary (debug info stripped) and any --with-model packages, with a SHA256SUMS
# of every file. `pack` makes one xz archive of it and splits it into parts small enough to be
# carried one per call of the accelerator tool beside the working tree (64 MiB in all: the
# part size is 64 MiB less the working tree less 2 MiB, unless --part-mib), with a
# PARTS.sha256 of the archive and of every part. On the device, each call carries the next
# part(s) (carry: target/gpu-transfer/PARTS.sha256 and target/gpu-transfer/kit.tar.xz.NN)
# and runs `receive`, which checks each part's sha256 and moves it to target/gpu-stash/
# (ignored, so it stays while the machine stays warm); `assemble` checks that every part
# is there, joins them, checks the archive's sha256, unpacks it and checks every file's.
# docs/configuration.md#the-cuda-path has the plan with its figures.
#
# CUDA 13 and cuDNN 9 user-space libraries: the CUDA provider needs libcudart.so.13,
# libcublas(Lt).so.13, libcufft.so.12, libcurand.so.10 and libcudnn*.so.9. `run` adds to
# LD_LIBRARY_PATH every lib/ folder of the Python `nvidia` packages it finds (nvidia-cuda-
# runtime, nvidia-cublas, nvidia-cudnn-cu13, ...: what pip installs for torch or
# onnxruntime-gpu), and /usr/local/cuda/lib64; `ldd` then names anything still missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
ORT_VERSION=1.31.1
transfer=target/gpu-transfer
stash=target/gpu-stash
kit=target/gpu-kit
tolerance=1e-4
presets=(official pytorch_grad_cam torchcam)
py=${PYTHON:-python3}

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[gpu_check] $*" >&2; }

# ---------------------------------------------------------------------------- pack (here)

tree_bytes() {  # what the accelerator tool carries besides `carry`: tracked and untracked, not ignored
  git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

pack() {
  local part_mib="" models=()
  while (($#)); do
    case $1 in
      --part-mib) part_mib=$2; shift 2 ;;
      --with-model) models+=("$2"); shift 2 ;;
      *) die "pack: unknown argument $1" ;;
    esac
  done
  scripts/setup/ort.sh gpu >&2
  [[ -x target/release/scorecam ]] || die "no target/release/scorecam: cargo build --release"
  rm -rf "$kit" "$transfer"
  mkdir -p "$kit/ort" "$kit/bin" "$kit/models" "$transfer"
  cp .ort/gpu/libonnxruntime.so.$ORT_VERSION .ort/gpu/libonnxruntime_providers_shared.so \
     .ort/gpu/libonnxruntime_providers_cuda.so "$kit/ort/"
  objcopy --strip-debug target/release/scorecam "$kit/bin/scorecam"
  for m in "${models[@]}"; do
    [[ -f $m/model.toml ]] || die "$m is not a model package"
    cp -r "$m" "$kit/models/"
  done
  (cd "$kit" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
  if [[ -z $part_mib ]]; then
    local tree; tree=$(tree_bytes)
    part_mib=$(( (64 * 1048576 - tree) / 1048576 - 2 ))
    log "working tree $((tree / 1048576)) MiB: parts of $part_mib MiB"
  fi
  ((part_mib >= 1)) || die "no room beside the working tree for a part"
  log "compressing $(du -sh "$kit" | cut -f1) (xz -9, $(nproc) threads)"
  tar -C "$kit" -cf - . | xz -9 -T"$(nproc)" > "$transfer/kit.tar.xz"
  (cd "$transfer" && split -b "${part_mib}M" -d -a 2 kit.tar.xz kit.tar.xz. \
     && sha256sum kit.tar.xz kit.tar.xz.[0-9][0-9] > PARTS.sha256 && rm kit.tar.xz)
  local n; n=$(ls "$transfer"/kit.tar.xz.[0-9][0-9] | wc -l)
  log "kit: $(du -sh "$kit" | cut -f1) unpacked, $(du -ch "$transfer"/kit.tar.xz.* | tail -1 | cut -f1) compressed, $n parts"
  echo "carry, one call each (with PARTS.sha256), command: scripts/dev/gpu_check.sh receive"
  for p in "$transfer"/kit.tar.xz.[0-9][0-9]; do echo "  $transfer/PARTS.sha256 $p"; done
  echo "then: scripts/dev/gpu_check.sh assemble && scripts/dev/gpu_check.sh run --out \$OUT/gpu-check"
}

# ---------------------------------------------------------------------------- receive / assemble (there)

receive() {
  [[ -f $transfer/PARTS.sha256 ]] || die "no $transfer/PARTS.sha256 carried"
  mkdir -p "$stash"
  cp "$transfer/PARTS.sha256" "$stash/"
  local got=0
  for p in "$transfer"/kit.tar.xz.[0-9][0-9]; do
    [[ -f $p ]] || continue
    local name; name=$(basename "$p")
    (cd "$transfer" && grep " $name\$" PARTS.sha256 | sha256sum -c --quiet -) || die "$name: sha256 differs (a damaged transfer)"
    mv "$p" "$stash/$name"
    got=$((got + 1))
  done
  local want; want=$(grep -c 'kit.tar.xz\.[0-9]' "$stash/PARTS.sha256")
  local have; have=$(ls "$stash"/kit.tar.xz.[0-9][0-9] 2>/dev/null | wc -l)
  echo "received $got part(s); $have of $want in $stash"
}

assemble() {
  [[ -f $stash/PARTS.sha256 ]] || die "nothing received: run receive first"
  local missing
  missing=$(grep -o 'kit.tar.xz\.[0-9][0-9]' "$stash/PARTS.sha256" | while read -r p; do [[ -f $stash/$p ]] || echo "$p"; done)
  [[ -z $missing ]] || die "parts missing: $(echo $missing)"
  (cd "$stash" && sha256sum -c --quiet <(grep 'kit.tar.xz\.[0-9]' PARTS.sha256)) || die "a part's sha256 differs"
  cat "$stash"/kit.tar.xz.[0-9][0-9] > "$stash/kit.tar.xz"
  (cd "$stash" && sha256sum -c --quiet <(grep ' kit.tar.xz$' PARTS.sha256)) || die "the joined archive's sha256 differs"
  rm -rf "$kit" && mkdir -p "$kit"
  if command -v xz >/dev/null; then
    xz -dc "$stash/kit.tar.xz" | tar -C "$kit" -xf -
  else  # no xz-utils: Python's lzma reads the same stream
    "$py" -c 'import lzma, sys, tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1]), mode="r|").extractall(sys.argv[2])' \
      "$stash/kit.tar.xz" "$kit"
  fi
  (cd "$kit" && sha256sum -c --quiet SHA256SUMS) || die "a file of the kit differs from its sha256"
  rm "$stash/kit.tar.xz"
  echo "kit assembled in $kit, every file's sha256 checked: $(cd "$kit" && wc -l < SHA256SUMS) files"
}

# ---------------------------------------------------------------------------- models (there, optional)

models() {  # random-init ResNet-50 and ViT-B/16 (torch.manual_seed(0)), split as docs/architectures.md does
  "$py" -c 'import torch, torchvision, onnx, onnxruntime' 2>/dev/null \
    || die "models needs torch, torchvision, onnx and onnxruntime in $py (else: pack --with-model DIR)"
  mkdir -p target/gpu-models "$kit/models"
  for spec in "resnet50 layer4" "vit_b_16 encoder.layers.encoder_layer_11"; do
    set -- $spec
    [[ -f $kit/models/$1/model.toml ]] && continue
    "$py" - "$1" <<'PY'
import sys, torch, torchvision
name = sys.argv[1]
torch.manual_seed(0)
m = getattr(torchvision.models, name)(weights=None).eval()
torch.onnx.export(m, torch.randn(1, 3, 224, 224), f"target/gpu-models/{name}.onnx", input_names=["image"],
                  output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                  opset_version=17, dynamo=False)
PY
    "$py" scripts/tools/split_model.py "target/gpu-models/$1.onnx" --module "$2" --out "$kit/models/$1" \
      --resize shorter_side_crop --crop-from 256 --description "$1 (torchvision, random init, seed 0)" >&2
  done
}

# ---------------------------------------------------------------------------- run (there; --cpu-only here)

cuda_library_path() {  # lib folders of the Python nvidia-* packages, and the system CUDA
  local dirs
  dirs=$("$py" - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
found = []
for r in sorted(p for p in roots if p and os.path.isdir(os.path.join(p, "nvidia"))):
    found += sorted(d for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) if os.path.isdir(d))
print(":".join(dict.fromkeys(found)))
PY
)
  [[ -d /usr/local/cuda/lib64 ]] && dirs="${dirs:+$dirs:}/usr/local/cuda/lib64"
  echo "$dirs"
}

write_config() {  # $1 file, $2 provider kind, $3 library
  cat > "$1" <<EOF
[models]
dir = "$out/models"
default = "efficientnet-lite0"
poll_interval_s = 0

[runtime]
library = "$3"

[engine]
workers = 1

[engine.session.provider]
kind = "$2"
policy = "require"
EOF
}

explain_json() {  # config, model, photo, preset, batch, out [, target]
  local cfg=$1 model=$2 photo=$3 preset=$4 batch=$5 json=$6 target=${7:-}
  local args=(--config "$cfg" --max-batch-size "$batch" explain "$photo" --model "$model" --method scorecam
              --preset "$preset" --format json --resolution model -o "$json")
  [[ -n $target ]] && args+=(--target "$target")
  "$bin" "${args[@]}" 2>> "$out/scorecam.log"
}

run() {
  local cpu_only=0 model_list="" batches="8 16 32 64" photos_all="chelsea goldfish golden_retriever airliner"
  out=target/gpu-check
  while (($#)); do
    case $1 in
      --cpu-only) cpu_only=1; shift ;;
      --models) model_list=$2; shift 2 ;;
      --batches) batches=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      *) die "run: unknown argument $1" ;;
    esac
  done
  mkdir -p "$out/maps" "$out/models"
  out=$(cd "$out" && pwd)
  : > "$out/scorecam.log"
  # The binary and library: the kit's when assembled, else this checkout's (--cpu-only here).
  if [[ -x $kit/bin/scorecam ]]; then bin=$root/$kit/bin/scorecam; lib=$root/$kit/ort/libonnxruntime.so.$ORT_VERSION
  else bin=$root/target/release/scorecam; lib=$root/.ort/cpu/libonnxruntime.so.$ORT_VERSION; fi
  [[ -x $bin && -f $lib ]] || die "no binary ($bin) or library ($lib): assemble the kit, or build here"
  ln -sfn "$root/models/efficientnet-lite0" "$out/models/efficientnet-lite0"
  for m in "$kit"/models/*/; do [[ -f $m/model.toml ]] && ln -sfn "$root/$m" "$out/models/$(basename "$m")"; done
  [[ -n $model_list ]] || model_list=$(ls "$out/models" | paste -sd,)
  write_config "$out/cpu.toml" cpu "$lib"
  write_config "$out/cuda.toml" cuda "$lib"
  {
    echo "date: $(date -u +%FT%TZ)"; echo "binary: $bin"; echo "library: $lib"
    nproc | sed 's/^/cores: /'
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/gpu: /'
    else echo "gpu: none (no nvidia-smi)"; fi
  } | tee "$out/machine.txt" >&2
  if ((!cpu_only)); then
    local extra; extra=$(cuda_library_path)
    export LD_LIBRARY_PATH="${extra:+$extra:}${LD_LIBRARY_PATH:-}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$out/machine.txt"
    local cuda_so; cuda_so=$(dirname "$lib")/libonnxruntime_providers_cuda.so
    if ldd "$cuda_so" | grep -q 'not found'; then
      ldd "$cuda_so" | grep 'not found' | tee -a "$out/machine.txt" >&2
      die "the CUDA provider's libraries are missing (above): install CUDA 13 / cuDNN 9 user-space libraries"
    fi
  fi

  # 1. Maps: every preset on the reference photos (all four on the default model; chelsea on the others).
  local results=$out/maps.tsv
  printf 'model\tphoto\tpreset\tcpu_ms\tcuda_ms\tmax_abs_diff\treference_max_abs_diff\n' > "$results"
  local m photo preset
  for m in ${model_list//,/ }; do
    local photos=$photos_all; [[ $m == efficientnet-lite0 ]] || photos=chelsea
    for photo in $photos; do
      for preset in "${presets[@]}"; do
        local cpu_json=$out/maps/$m.$photo.$preset.cpu.json cuda_json=$out/maps/$m.$photo.$preset.cuda.json
        log "$m $photo $preset: cpu"
        explain_json "$out/cpu.toml" "$m" "tests/fixtures/reference/$photo.png" "$preset" 4 "$cpu_json"
        if ((cpu_only)); then cuda_json=$cpu_json  # the dry run compares the CPU with itself
        else
          local target; target=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["explanations"][0]["target"]["index"])' "$cpu_json")
          log "$m $photo $preset: cuda"
          explain_json "$out/cuda.toml" "$m" "tests/fixtures/reference/$photo.png" "$preset" 64 "$cuda_json" "$target"
        fi
        "$py" - "$cpu_json" "$cuda_json" "$m" "$photo" "$preset" >> "$results" <<'PY'
import json, os, struct, sys
cpu, cuda, model, photo, preset = sys.argv[1:]
a, b = (json.load(open(p)) for p in (cpu, cuda))
x, y = (d["explanations"][0]["saliency"]["data"] for d in (a, b))
assert len(x) == len(y), (len(x), len(y))
diff = max(abs(u - v) for u, v in zip(x, y))
ref = "-"
npy = f"tests/fixtures/reference/{photo}.{preset}.npy"
if model == "efficientnet-lite0" and os.path.exists(npy):  # the peer library's map, 224×224 float32
    raw = open(npy, "rb").read()
    start = 10 + struct.unpack("<H", raw[8:10])[0]
    r = struct.unpack(f"<{(len(raw) - start) // 4}f", raw[start:])
    ref = f"{max(abs(u - v) for u, v in zip(y, r)):.3e}" if len(r) == len(y) else "n/a (7x7 reference)"
ms = lambda d: d["timings_ms"]["total_ms"]
print(f"{model}\t{photo}\t{preset}\t{ms(a):.1f}\t{ms(b):.1f}\t{diff:.3e}\t{ref}")
PY
      done
    done
  done

  # 2. Times: exact Score-CAM (official) on chelsea, batch sizes 8..64 (CUDA; the CPU once, at 4).
  local times=$out/times.tsv
  printf 'model\tprovider\tbatch\tpasses\ttotal_ms\n' > "$times"
  for m in ${model_list//,/ }; do
    local runs=("cpu 4")
    ((cpu_only)) || for b in $batches; do runs+=("cuda $b"); done
    local r
    for r in "${runs[@]}"; do
      set -- $r
      local json=$out/maps/$m.time.$1.$2.json
      log "$m time: $1, batch $2"
      explain_json "$out/$1.toml" "$m" tests/fixtures/reference/chelsea.png official "$2" "$json"
      "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4], str(d["stats"]["forward_passes"]), "%.1f" % d["timings_ms"]["total_ms"]]))' \
        "$json" "$m" "$1" "$2" >> "$times"
    done
  done

  column -t -s $'\t' "$results" | tee "$out/summary.txt"
  column -t -s $'\t' "$times" | tee -a "$out/summary.txt"
  local worst; worst=$(awk -F'\t' 'NR > 1 && $6 + 0 > w {w = $6 + 0} END {printf "%.3e", w + 0}' "$results")
  if awk -v w="$worst" -v t="$tolerance" 'BEGIN {exit !(w <= t)}'; then
    echo "maps: CUDA equals the CPU within $tolerance (worst max |Δ| $worst)$( ((cpu_only)) && echo ' [--cpu-only: the CPU against itself]')" | tee -a "$out/summary.txt"
  else
    echo "maps: FAILED, worst max |Δ| $worst > $tolerance" | tee -a "$out/summary.txt"; exit 1
  fi
}

# ---------------------------------------------------------------------------- dry run (here)

dry_run() {  # pack, then receive and assemble in a scratch copy of the tree, part by part, then run --cpu-only
  pack "$@"
  local scratch; scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  trap 'rm -rf "$scratch"' EXIT
  mkdir -p "$scratch/scripts/dev" "$scratch/target/gpu-transfer"
  cp scripts/dev/gpu_check.sh "$scratch/scripts/dev/"
  for p in "$transfer"/kit.tar.xz.[0-9][0-9]; do  # one "call" per part, as on the device
    rm -f "$scratch/$transfer"/*
    cp "$transfer/PARTS.sha256" "$p" "$scratch/$transfer/"
    (cd "$scratch" && bash scripts/dev/gpu_check.sh receive)
  done
  # A damaged part is refused.
  cp "$transfer/PARTS.sha256" "$scratch/$transfer/" && head -c 1000 /dev/urandom > "$scratch/$transfer/kit.tar.xz.00"
  if (cd "$scratch" && bash scripts/dev/gpu_check.sh receive 2>/dev/null); then die "a damaged part was accepted"; fi
  echo "a damaged part is refused: ok"
  (cd "$scratch" && bash scripts/dev/gpu_check.sh assemble)
  cmp "$scratch/$kit/ort/libonnxruntime_providers_cuda.so" .ort/gpu/libonnxruntime_providers_cuda.so
  echo "reassembled CUDA provider library identical to .ort/gpu's: ok"
  rm -rf "$scratch"; trap - EXIT
  run --cpu-only --batches "" --out target/gpu-check-dry
}

cmd=${1:-}; shift || true
case $cmd in
  pack) pack "$@" ;;
  receive) receive ;;
  assemble) assemble ;;
  models) models ;;
  run) run "$@" ;;
  dry-run) dry_run "$@" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
