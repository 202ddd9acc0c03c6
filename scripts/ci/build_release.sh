#!/usr/bin/env bash
# Builds the release binary and copies it to DEST (default: dist/). The Docker image's build
# stage runs this; CI runs it natively (scripts/ci/check_deploy.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dest=${1:-$root/dist}
cd "$root"
cargo build --release --locked --bin scorecam
mkdir -p "$dest"
cp target/release/scorecam "$dest/scorecam"
echo "built $dest/scorecam"
