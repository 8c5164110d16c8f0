#!/usr/bin/env bash
# CityBrain set-up: checks the machine has what the README says it needs, then creates the
# stream-layer virtual environment with the shared package. Run by `make demo` / `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: \`$1\` not found on PATH. Fix: $2" >&2; exit 2; }
}
need "$PYTHON" "install Python 3.11 (or set PYTHON=/path/to/python3.11)."
need java "install Java 17 or newer (OpenJDK); the embedded Kafka broker runs on it."
need mvn "install Apache Maven 3.8+; it fetches the Kafka broker's jars from Maven Central."
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "error: $PYTHON is $("$PYTHON" -V 2>&1), CityBrain needs Python 3.11. Fix: set PYTHON=python3.11." >&2; exit 2; }

# Stream workers and the CLI: faust-streaming pins croniter<6, so Airflow gets its own
# environment (below), as production images are separate too.
venv_with() {   # venv_with <dir> <extras> <what for>
  if [ ! -x "$1/bin/python" ]; then
    echo "creating $1"
    "$PYTHON" -m venv "$1"
  fi
  echo "installing citybrain[$2] into $1 ($3)"
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$2]"
}
VENV=.venv/streams
venv_with "$VENV" streams,dev "stream workers, CLI, tests"

# DAGs: Airflow 3 (needs croniter>=6.2.2) and Great Expectations, with the shared package.
venv_with .venv/airflow airflow,dev "Airflow 3, Great Expectations 1.x"
touch "$VENV/.installed"
