#!/usr/bin/env bash
# Runs the HTTP examples of README.md and docs/http-api.md, as written, against a live
# server (the debug build, the default model), so they cannot rot: every `curl` must exit 0
# with a 2xx answer (curl runs with --fail-with-body). The server's address replaces
# 127.0.0.1:8080; commands run in a scratch folder where `samples/` is the checkout's.
# Not run here: the set-up and `cargo run --release` commands (the test suite covers the
# CLI), and the README's examples with placeholder inputs (photos/, my_model.onnx).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

cargo build --locked --quiet
mkdir -p target
source scripts/ci/serve_lib.sh
start_server target/docs-examples-server.log
work=$(mktemp -d)
ln -s "$root/samples" "$work/samples"
python3 - "$url" README.md docs/http-api.md > "$work/examples.sh" <<'PY'
import re, shlex, sys
url, files = sys.argv[1], sys.argv[2:]
print("set -euo pipefail")
print('curl() { command curl --fail-with-body --max-time 600 "$@"; }')
for path in files:
    text = open(path, encoding="utf-8").read()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        command = ""
        for line in block.splitlines():
            command += line[:-1] + " " if line.endswith("\\") else line
            if line.endswith("\\"):
                continue
            stripped = command.strip()
            command = ""
            if not stripped or stripped.startswith("#"):
                continue
            if re.match(r"(curl |printf |b64=)", stripped):
                print(f"echo {shlex.quote(f'== {path}: {stripped[:100]}')} >&2")
                # On its own line inside braces: a trailing comment cannot swallow the redirect.
                print("{\n" + stripped.replace("http://127.0.0.1:8080", url) + "\n} > /dev/null")
PY
count=$(grep -c '^echo' "$work/examples.sh")
echo "running $count examples against $url"
(cd "$work" && bash examples.sh)
echo "docs examples: all $count ran"
rm -rf "$work"
