# Shared by scripts/run and scripts/test: create .venv and install a requirements
# file, skipping pip when that file has not changed since the last install.
set -euo pipefail
ensure_venv() {
  local req="$1"
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  local stamp=".venv/.installed-$(basename "$req")"
  local want
  want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q -r "$req"
    echo "$want" > "$stamp"
  fi
}
