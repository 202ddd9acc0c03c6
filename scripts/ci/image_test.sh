#!/usr/bin/env bash
# CI: the image, built and probed. Builds the unchanged Dockerfile with podman on stand-in
# bases made from Debian packages (no registry image can be pulled here), then runs the
# container the way the Deployment does (read-only root, 1 GiB, 2 CPUs, no capabilities)
# and checks it from outside:
#   - its HEALTHCHECK turns healthy (run by hand: no systemd to run podman's timer);
#   - it runs as uid 65532;
#   - samples/chelsea.png explained through the published port (format=json) gives the
#     native binary's map (max |delta| <= MAP_TOLERANCE);
#   - a burst past capacity gets only 200, 429 or 503, and no OOM kill;
#   - SIGTERM (podman stop) drains it and it exits 0.
# Idempotent: installs and stand-in bases already present are kept (a base is rebuilt when
# its recipe below changes); the image build reuses podman's layer and cache-mount caches.
# Needs root (apt, rootful podman). Prints the time of every phase; the figures also land in
# target/image-test/figures.txt (DEPLOYMENT.md quotes them).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

IMAGE=${IMAGE_TEST_TAG:-localhost/scorecam:image-test}
PORT=${IMAGE_TEST_PORT:-18099}
MAP_TOLERANCE=${MAP_TOLERANCE:-1e-4}
BURST=${IMAGE_TEST_BURST:-24}
# Capacity in the probe: max_concurrent_jobs (8, the default) + max_queued_jobs (lowered from
# 32 to 8 so that BURST=24 full explanations overflow it and all admitted ones finish in time).
QUEUED=${IMAGE_TEST_QUEUED_JOBS:-8}
name=scorecam-image-test-$$
state=$root/target/image-test
mkdir -p "$state"
: > "$state/figures.txt"

die() { echo "image test FAILED: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "needs root (apt-get, rootful podman)"
free_gib=$(df -Pk /var | awk 'NR==2 {print int($4 / 1048576)}')
((free_gib >= 5)) || echo "warning: ${free_gib} GiB free under /var; a cold run needs about 5 GiB" >&2

# --- timings
phase_name="" phase_start=0 t_begin=$(date +%s.%N)
summary=()
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
phase() {
  local t; t=$(now)
  if [[ -n $phase_name ]]; then
    local d; d=$(secs "$phase_start" "$t")
    echo "   ($phase_name: ${d} s)"
    summary+=("$(printf '%-34s %8s s' "$phase_name" "$d")")
  fi
  phase_name=$1 phase_start=$t
  [[ -n $1 ]] && echo "== $1"
  return 0
}
figure() { echo "$1=$2" | tee -a "$state/figures.txt"; }

cleanup() {
  local rc=$?
  if podman container exists "$name" 2>/dev/null; then
    podman logs "$name" > "$state/container.log" 2>&1 || true
    if ((rc)); then echo "--- container log (last 40 lines)" >&2; podman logs --tail 40 "$name" >&2 || true; fi
    podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  fi
  [[ -n ${burst_dir:-} ]] && rm -rf "$burst_dir"
  exit $rc
}
trap cleanup EXIT

# --- 1. podman and mmdebstrap (Debian's packages)
phase "install podman, mmdebstrap"
pkgs=(podman mmdebstrap runc containernetworking-plugins uidmap curl python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "already installed: ${pkgs[*]}"
fi
podman --version

# What podman needs on these machines (no systemd, cgroup v1, capped rlimits): its own
# containers.conf, so that the machine's is left alone.
# nproc: conmon and runc ran with nproc 32768 here (= kernel.pid_max) whatever `ulimit -Hu`
# said (96367), and runc refuses a container limit above its own: cap it at pid_max.
ulimits=()
hn=$(ulimit -Hn); hu=$(ulimit -Hu); pid_max=$(cat /proc/sys/kernel/pid_max)
[[ $hu == unlimited || $hu -gt $pid_max ]] && hu=$pid_max
[[ $hn != unlimited ]] && ulimits+=("\"nofile=$hn:$hn\"")
[[ $hu != unlimited ]] && ulimits+=("\"nproc=$hu:$hu\"")
cat > "$state/containers.conf" <<EOF
[containers]
default_ulimits = [$(IFS=,; echo "${ulimits[*]}")]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$state/containers.conf

# --- 2. stand-in bases, tagged with the Dockerfile's base names
# Each from Debian bookworm with mmdebstrap. The machine's own CA certificates go into the
# build stages' bases: crates.io and PyPI are reached through a TLS-intercepting proxy.
mirrors=("deb http://deb.debian.org/debian bookworm main"
         "deb http://deb.debian.org/debian bookworm-updates main"
         "deb http://deb.debian.org/debian-security bookworm-security main")
slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*')
add_ca='mkdir -p "$1/usr/local/share/ca-certificates" && find /usr/local/share/ca-certificates -maxdepth 1 -name "*.crt" -exec cp {} "$1/usr/local/share/ca-certificates/" \; && chroot "$1" update-ca-certificates >/dev/null'
path_env='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

# base TAG RECIPE-ID MMDEBSTRAP-ARGS... -- IMPORT-CHANGES... (podman import: one ENV per change)
base() {
  local tag=$1 recipe=$2; shift 2
  local margs=() changes=()
  while [[ $1 != -- ]]; do margs+=("$1"); shift; done; shift
  for c in "$@"; do changes+=(--change "$c"); done
  local id; id=$(printf '%s\n' "${margs[@]}" "$@" "$recipe" | sha256sum | cut -c1-16)
  if [[ $(podman image inspect --format '{{index .Labels "org.scorecam.stand-in"}}' "$tag" 2>/dev/null) == "$id" ]]; then
    echo "$tag: stand-in $id already present"
    return 0
  fi
  echo "$tag: building stand-in $id"
  mmdebstrap --quiet "${margs[@]}" bookworm - "${mirrors[@]}" \
    | podman import --quiet "${changes[@]}" --change "LABEL org.scorecam.stand-in=$id" - "$tag" >/dev/null
  bases_changed=yes
}
bases_changed=""

phase "stand-in base rust:1.95-bookworm"
# rust:1.95-bookworm is bookworm + the Rust toolchain in /usr/local/cargo. rustup's servers
# are out of reach; Debian bookworm-security's rustc-web/cargo-web (1.96, built for
# bookworm's glibc, so the binary runs on the distroless bookworm base) stand in for it.
base docker.io/library/rust:1.95-bookworm v1 \
  --variant=apt "${slim[@]}" \
  --include=ca-certificates,rustc-web,cargo-web,gcc,g++,libc6-dev,make,pkg-config,git,curl \
  --customize-hook="$add_ca" \
  --customize-hook='mkdir -p "$1/usr/local/cargo/bin" "$1/usr/local/rustup"' -- \
  "ENV CARGO_HOME=/usr/local/cargo" "ENV RUSTUP_HOME=/usr/local/rustup" \
  "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  "CMD [\"bash\"]"
rust_version=$(podman run --rm --pull=never docker.io/library/rust:1.95-bookworm \
  sh -c 'test "$CARGO_HOME" = /usr/local/cargo && rustc --version') || die "the rust stand-in is broken"
echo "stand-in toolchain: $rust_version"
figure rustc "$rust_version"

phase "stand-in base python:3.11-slim"
# python:3.11-slim is bookworm + CPython 3.11 with pip; bookworm's own python3 is 3.11.
base docker.io/library/python:3.11-slim v1 \
  --variant=apt "${slim[@]}" --include=ca-certificates,python3,python3-pip \
  --customize-hook="$add_ca" -- \
  "ENV $path_env" "ENV LANG=C.UTF-8" "CMD [\"python3\"]"

phase "stand-in base gcr.io/distroless/cc-debian12:nonroot"
# distroless cc-debian12:nonroot: glibc, libgcc, libstdc++, libgomp, libssl, CA certificates,
# tzdata, netbase, /etc/passwd with nonroot (65532), user 65532, workdir /home/nonroot, no
# package manager and no shell. Packages are only extracted (no maintainer scripts), as
# distroless does; the CA bundle is assembled from the ca-certificates package. (mmdebstrap
# runs no customize hooks for the extract variant: the files go in by an extract hook.)
distroless_files='set -e
cd "$1"
mkdir -p etc/ssl/certs home/nonroot root tmp
cat usr/share/ca-certificates/mozilla/*.crt > etc/ssl/certs/ca-certificates.crt
printf "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" > etc/passwd
printf "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n" > etc/group
printf "hosts: files dns\n" > etc/nsswitch.conf
chown 65532:65532 home/nonroot; chmod 700 root; chmod 1777 tmp'
base gcr.io/distroless/cc-debian12:nonroot v1 \
  --variant=extract "${slim[@]}" \
  --include=base-files,netbase,tzdata,ca-certificates,libc6,libgcc-s1,libgomp1,libstdc++6,libssl3 \
  --extract-hook="$distroless_files" -- \
  "ENV $path_env" "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
  "USER 65532" "WORKDIR /home/nonroot"

# --- 3. the unchanged Dockerfile
phase "podman build (the Dockerfile, unchanged)"
# A replaced base leaves the old one and the layers built on it unreachable: drop them (the
# cargo caches are mounts, not layers, and stay).
[[ -n $bases_changed ]] && podman image prune -f >/dev/null
git diff --quiet HEAD -- Dockerfile || echo "warning: the Dockerfile differs from HEAD" >&2
# --format docker keeps HEALTHCHECK (OCI image config has no such field).
podman build --pull=never --format docker -t "$IMAGE" . 2>&1 | sed -u 's/^/   /' \
  || die "podman build failed"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
figure image_size_mb "$(( (size + 500000) / 1000000 ))"
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q healthcheck \
  || die "the image has no HEALTHCHECK (built without --format docker?)"

# --- 4. the native binary's map (CI's check_deploy.sh has built it already: a no-op then)
phase "native reference map"
scripts/setup/ort.sh cpu >/dev/null
scripts/ci/build_release.sh "$state/native" >/dev/null 2>&1 || die "native release build failed"
ORT_DYLIB_PATH=$root/.ort/cpu/libonnxruntime.so.1.31.1 "$state/native/scorecam" \
  --models-dir models explain samples/chelsea.png --format json -o "$state/native.json" 2> "$state/native.log" \
  || { cat "$state/native.log" >&2; die "native explain failed"; }

# --- 5. run it as the Deployment does and wait for the HEALTHCHECK
phase "run and wait for healthy"
t_run=$(now)
podman run -d --name "$name" --pull=never --read-only --memory 1g --memory-swap 1g --cpus 2 \
  --cap-drop ALL --security-opt no-new-privileges \
  -e SCORECAM_MAX_QUEUED_JOBS="$QUEUED" -p "127.0.0.1:$PORT:8080" "$IMAGE" >/dev/null 2> "$state/run.err" \
  || { cat "$state/run.err" >&2; die "podman run failed"; }
# (run.err holds podman's complaints that there is no systemd to time the healthchecks.)
healthy=""
for _ in $(seq 1 240); do   # the image's start period is 60 s; allow 120 s
  [[ $(podman inspect --format '{{.State.Status}}' "$name") == running ]] || die "container stopped before turning healthy"
  if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=$(now); break; fi
  sleep 0.5
done
[[ -n $healthy ]] || die "HEALTHCHECK never passed within 120 s"
health=$(podman inspect --format '{{.State.Health.Status}}' "$name" 2>/dev/null \
  || podman inspect --format '{{.State.Healthcheck.Status}}' "$name")
[[ $health == healthy ]] || die "health status is '$health'"
figure time_to_healthy_s "$(secs "$t_run" "$healthy")"
pid=$(podman inspect --format '{{.State.Pid}}' "$name")
uid=$(awk '/^Uid:/ {print $3}' "/proc/$pid/status")   # effective uid, seen from the host
[[ $uid == 65532 ]] || die "the server runs as uid '$uid', not 65532"
echo "healthy, running as uid $uid on a read-only root"

cgroup=$(podman inspect --format '{{.State.CgroupPath}}' "$name")
memdir=""
for d in "/sys/fs/cgroup/memory$cgroup" "/sys/fs/cgroup$cgroup"; do [[ -d $d ]] && { memdir=$d; break; }; done
mem_now() {   # the working set, as podman/docker stats count it: usage less inactive file pages
  if [[ -f $memdir/memory.usage_in_bytes ]]; then
    echo $(( $(cat "$memdir/memory.usage_in_bytes") - $(awk '$1=="total_inactive_file" {print $2}' "$memdir/memory.stat") ))
  else
    echo $(( $(cat "$memdir/memory.current") - $(awk '$1=="inactive_file" {print $2}' "$memdir/memory.stat") ))
  fi
}
mem_peak() {  # the cgroup's own high-water mark (page cache included)
  cat "$memdir/memory.max_usage_in_bytes" 2>/dev/null || cat "$memdir/memory.peak" 2>/dev/null || echo 0
}
[[ -n $memdir ]] && figure memory_idle_mib "$(( $(mem_now) / 1048576 ))"

# --- 6. the photo through the port: the native binary's map
phase "explain through the port"
curl -sS -f --max-time 300 -H 'Content-Type: image/png' --data-binary @samples/chelsea.png \
  "http://127.0.0.1:$PORT/explain?format=json" -o "$state/container.json" \
  || die "explain through the port failed"
python3 - "$state/native.json" "$state/container.json" "$MAP_TOLERANCE" <<'PY' > "$state/map.txt" \
  || { cat "$state/map.txt"; die "map comparison failed"; }
import json, sys
native, served = (json.load(open(p)) for p in sys.argv[1:3])
tol = float(sys.argv[3])
a, b = native["explanations"][0], served["explanations"][0]
assert a["target"]["index"] == b["target"]["index"], (a["target"], b["target"])
sa, sb = a["saliency"], b["saliency"]
assert (sa["width"], sa["height"]) == (sb["width"], sb["height"]), (sa["width"], sb["width"])
diff = max(abs(x - y) for x, y in zip(sa["data"], sb["data"], strict=True))
score = abs(a["target"]["score"] - b["target"]["score"])
print(f"map_max_abs_diff={diff:.3g}")
print(f"map_target={b['target']['index']} ({b['target']['label']}, {b['target']['score']:.3f}), "
      f"{sb['width']}x{sb['height']}, score |delta| {score:.3g}")
if diff > tol or score > 1e-5:
    sys.exit(f"the container's map differs from the native binary's: max |delta| {diff} > {tol}")
PY
tee -a "$state/figures.txt" < "$state/map.txt"


# --- 7. a burst past capacity
phase "burst of $BURST explanations"
burst_dir=$(mktemp -d)
peak=0
( while :; do m=$(mem_now); echo "$m"; sleep 0.5; done ) > "$burst_dir/mem" 2>/dev/null &
sampler=$!
t_burst=$(now)
# Distinct targets, so that no answer comes from the result cache; a long deadline, so that
# every admitted job finishes (a 504 would fail the check).
seq 0 $((BURST - 1)) | xargs -P "$BURST" -I{} \
  curl -s -o /dev/null -w '%{http_code}\n' --max-time 600 -H 'Content-Type: image/png' \
  --data-binary @samples/chelsea.png "http://127.0.0.1:$PORT/explain?target={}&timeout_ms=300000" \
  > "$burst_dir/codes" || true
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
figure burst_s "$(secs "$t_burst" "$(now)")"
codes=$(sort "$burst_dir/codes" | uniq -c | awk '{printf "%s×%s ", $2, $1}')
figure burst_statuses "$codes"
[[ $(wc -l < "$burst_dir/codes") -eq $BURST ]] || die "$(wc -l < "$burst_dir/codes") answers for $BURST requests"
grep -qvE '^(200|429|503)$' "$burst_dir/codes" && die "statuses other than 200/429/503: $codes"
grep -q '^200$' "$burst_dir/codes" || die "no explanation succeeded in the burst"
grep -q '^429$' "$burst_dir/codes" || die "the burst never reached capacity (no 429)"
[[ $(podman inspect --format '{{.State.OOMKilled}}' "$name") == false ]] || die "OOM-killed"
[[ $(podman inspect --format '{{.State.Status}}' "$name") == running ]] || die "the container died in the burst"
if [[ -n $memdir ]]; then
  peak=$(sort -n "$burst_dir/mem" | tail -1)
  figure memory_burst_peak_mib "$(( peak / 1048576 ))"
  figure memory_cgroup_max_usage_mib "$(( $(mem_peak) / 1048576 ))"
fi
podman stats --no-stream --format 'podman stats after the burst: {{.MemUsage}} ({{.MemPerc}}), CPU {{.CPUPerc}}' "$name"
podman healthcheck run "$name" >/dev/null || die "unhealthy after the burst"

# --- 8. SIGTERM: drain and exit 0
phase "SIGTERM (podman stop -t 30)"
t_stop=$(now)
podman stop -t 30 "$name" >/dev/null 2>> "$state/run.err"
figure stop_s "$(secs "$t_stop" "$(now)")"
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[[ $code == 0 ]] || die "exit code $code after SIGTERM"
[[ $(podman inspect --format '{{.State.OOMKilled}}' "$name") == false ]] || die "OOM-killed"
echo "exited 0"

phase ""
echo "== image test passed"
printf '%s\n' "${summary[@]}"
figure total_s "$(secs "$t_begin" "$(now)")"
