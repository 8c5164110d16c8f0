#!/usr/bin/env bash
# The live Airflow's metadata database: Debian's PostgreSQL server programs (initdb, postgres).
# Run by `make up` and `make test`; CityBrain starts its own server from them (data under var/airflow/postgres,
# 127.0.0.1 only), never the system's service.
set -euo pipefail
. "$(dirname "$0")/debian.sh"
found() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
if found; then echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1 || command -v initdb)"; exit 0; fi
debian_install "the live Airflow's metadata database" postgresql
found && echo "postgresql: installed"
