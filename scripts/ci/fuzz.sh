#!/usr/bin/env bash
# Fuzz smoke test (what CI runs): builds the cargo-fuzz targets in fuzz/ and runs each for a
# while, starting from the committed corpus (fuzz/corpus/<target>/, run in full first, so it
# is also a regression test). New corpus entries go to a temporary folder, so the checkout
# is never modified; a crash leaves its input in fuzz/artifacts/<target>/ and fails.
#
#   scripts/ci/fuzz.sh                 # every target, 30 s each
#   scripts/ci/fuzz.sh 600 decode_image
#   FUZZ_SANITIZER=none scripts/ci/fuzz.sh   # without AddressSanitizer (faster build and runs)
#
# Needs: rustup's stable toolchain (cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1
# unlocks them on stable, and stable's rust-std ships the AddressSanitizer runtime), a C++
# compiler (libfuzzer-sys builds libFuzzer), Python 3 (scripts/setup/ort.sh, for the
# request_parsing target's ONNX Runtime). cargo-fuzz is installed if missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

seconds=${1:-30}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(decode_image request_parsing)
sanitizer=${FUZZ_SANITIZER:-address}
cargo_fuzz_version=0.13.2

export RUSTC_BOOTSTRAP=1

command -v c++ >/dev/null || { echo "error: a C++ compiler is needed (apt-get install g++)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi
scripts/setup/ort.sh cpu

# Per target: libFuzzer options. decode_image: any single allocation over 640 MiB is a
# failure (the decoder budget is 512 MiB, limits.max_alloc_bytes); request_parsing runs
# the tiny test model with small limits set by the target itself.
options() {
  case "$1" in
    decode_image) echo "-max_len=131072 -timeout=60 -rss_limit_mb=3072 -malloc_limit_mb=640" ;;
    request_parsing) echo "-max_len=32768 -timeout=30 -rss_limit_mb=3072" ;;
    *) echo "error: unknown target $1" >&2; exit 2 ;;
  esac
}

# Read-only seed folders besides the committed corpus.
seed_dirs() {
  case "$1" in
    decode_image) echo "../tests/fixtures/hostile ../samples" ;;
    *) echo "" ;;
  esac
}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cd fuzz
echo "== building (sanitizer: $sanitizer)"
cargo fuzz build -s "$sanitizer"

status=0
for target in "${targets[@]}"; do
  opts=$(options "$target")
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "== $target: ${seconds} s ($opts)"
  # shellcheck disable=SC2086
  if ! cargo fuzz run -s "$sanitizer" "$target" "$scratch/$target" "corpus/$target" $(seed_dirs "$target") -- \
    -max_total_time="$seconds" -print_final_stats=1 $opts 2>"$scratch/$target.log"; then
    status=1
    tail -n 60 "$scratch/$target.log"
    echo "FAIL: $target (the input is in fuzz/artifacts/$target/)"
    continue
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")
  new=$(find "$scratch/$target" -type f | wc -l)
  cov=$(grep -a -m1 'INITED' "$scratch/$target.log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p' || true)
  echo "ok: $target: $runs executions in ${seconds} s; corpus $(find "corpus/$target" -type f | wc -l) files" \
    "(coverage at start $cov edges), $new new inputs (not kept)"
done
exit $status
