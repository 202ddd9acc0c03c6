# Sourced by the scripts that test a live server. `start_server LOG [flag…]` starts the debug
# build on a free loopback port with JSON logs in LOG, sets $server (its pid) and $url, and
# stops it when the calling script exits.
start_server() {
  local log=$1
  shift
  target/debug/scorecam serve --bind 127.0.0.1:0 --log-format json "$@" 2>"$log" &
  server=$!
  trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
  url=""
  for _ in $(seq 1 600); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's/listening on //') || true
    [[ -n "$url" ]] && return 0
    kill -0 "$server" 2>/dev/null || { cat "$log"; echo "server exited" >&2; exit 1; }
    sleep 0.2
  done
  cat "$log"
  echo "server did not start" >&2
  exit 1
}
