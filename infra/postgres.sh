#!/usr/bin/env bash
# The live Airflow's metadata database: Debian's PostgreSQL server programs (initdb, postgres).
# Run by `make up` and `make test`; CityBrain starts its own server from them (data under var/airflow/postgres,
# 127.0.0.1 only), never the system's service.
set -euo pipefail
found() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
if found; then echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1 || command -v initdb)"; exit 0; fi
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: the live Airflow needs PostgreSQL's server programs (Debian package postgresql) and this user" \
       "cannot install them. Fix: ask an administrator to run \`apt-get install postgresql\`." >&2
  exit 2
fi
echo "installing postgresql from Debian (the live Airflow's metadata database)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
found && echo "postgresql: installed"
