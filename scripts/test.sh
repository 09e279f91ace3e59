#!/usr/bin/env bash
# The one test command (README, .ci/run): a virtual environment with the project and
# its test extra, the services the tests talk to, then pytest. Extra arguments go to
# pytest, e.g. `scripts/test.sh -k contract -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=${JUPITER_BUS_VENV:-.venv}

if [ ! -x "$venv/bin/python" ]; then
    echo "== creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
echo "== installing jupiter-bus with its test extra"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'

"$venv/bin/python" scripts/ensure_services.py

echo "== running the tests"
exec "$venv/bin/python" -m pytest "$@"
