# Sourced by the scripts that need a Python tool: `ensure_venv DIR REQUIREMENTS` makes (or
# keeps) a virtual environment with exactly those pinned packages; it is rebuilt only when
# the requirements file changes.
ensure_venv() {
  local venv=$1 req=$2 want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -f "$venv/.stamp" && "$(cat "$venv/.stamp")" == "$want" ]]; then
    return 0
  fi
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$req"
  echo "$want" > "$venv/.stamp"
}
