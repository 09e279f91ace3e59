#!/usr/bin/env bash
# Run the jupiter-bus demo (in-process bus by default; --broker URL for RabbitMQ).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${JUPITER_BUS_VENV:-.venv}
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e .
exec "$venv/bin/jupiter-bus" demo "$@"
