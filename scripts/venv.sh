#!/usr/bin/env bash
# Create (or refresh) the project's Python virtualenv in ./.venv with the
# packages in tests/requirements.txt. Idempotent and quick when nothing changed:
# a stamp file holds the hash of the requirements it was built from.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/tests/requirements.txt"
python=${MIGSNAP_BOOTSTRAP_PYTHON:-python3}

stamp="$venv/.migsnap-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "venv: creating $venv from tests/requirements.txt" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" >"$stamp"
