#!/usr/bin/env bash
# The hostile-input burst on a slow machine: starts the release server inside a CPU quota
# (QUOTA CPUs' worth of time, e.g. 0.66 on a 2-core machine: about three times slower),
# fresh (no explanation has run: the engine knows only the rate it timed when it opened
# the model), sends N explanations at once with the server's default deadline and no
# retries (scripts/bench/burst.py --at-once), and fails unless every answer is 200, 429 or
# 503 and the server is ready after. Needs root for the cgroup (v2 `cpu.max`, or v1
# `cpu.cfs_quota_us`), and target/release/scorecam (or the binary in $SCORECAM_BIN).
#
#   scripts/bench/quota_burst.sh [QUOTA [N [server flag…]]]     # defaults: 0.66 24
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
quota=${1:-0.66}
n=${2:-24}
shift $(($# > 2 ? 2 : $#))
binary=${SCORECAM_BIN:-target/release/scorecam}
[[ -x $binary ]] || { echo "build it first: cargo build --release" >&2; exit 2; }

period=100000
micros=$(python3 -c "print(int($quota * $period))")
name=scorecam-quota-$$
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  group=/sys/fs/cgroup/$name
  mkdir "$group"
  echo "$micros $period" >"$group/cpu.max"
else
  group=/sys/fs/cgroup/cpu/$name
  mkdir "$group"
  echo "$period" >"$group/cpu.cfs_period_us"
  echo "$micros" >"$group/cpu.cfs_quota_us"
fi

log=$(mktemp)
# The server is started inside the group (the shell joins it, then execs), so every
# thread it ever makes is under the quota.
sh -c "echo \$\$ >'$group/cgroup.procs' && exec $binary serve --bind 127.0.0.1:0 --log-format json --cache-mib 0 $*" \
  2>"$log" &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rmdir "$group" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT
url=""
for _ in $(seq 1 600); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //') || true
  [[ -n "$url" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "server exited" >&2; exit 1; }
  sleep 0.2
done
[[ -n "$url" ]] || { echo "server did not start" >&2; exit 1; }
echo "server under a quota of $quota CPU ($micros µs per $period µs) at $url; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 scripts/bench/burst.py --server "quota=$url" --at-once "$n"
curl -s "$url/metrics" | grep -E '^scorecam_(refused_deadline|ended_early|rejected_jobs|masked_passes)_total' || true
