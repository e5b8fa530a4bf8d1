# Shared by scripts/run, scripts/test and .ci/run: create a venv (default .venv) and
# install a requirements file, skipping pip when the requirements have not changed
# since the last install into that venv.
set -euo pipefail
ensure_venv() {
  local req="$1"
  local venv="${2:-.venv}"
  local py="${PYTHON:-python3}"
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
  fi
  local stamp="$venv/.installed-$(basename "$req")"
  local want
  want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q -r "$req"
    echo "$want" > "$stamp"
  fi
}
