#!/usr/bin/env bash
# Prometheus and Alertmanager for the alerting rules' tests: Debian's `prometheus` (promtool) and
# `prometheus-alertmanager` (alertmanager, amtool). Run by `make test`; no service of the system is started.
set -euo pipefail
. "$(dirname "$0")/debian.sh"
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if [ ${#missing[@]} -ne 0 ]; then
  debian_install "the alerting rules' tests" "${missing[@]}"
fi
echo "prometheus: $(promtool --version 2>&1 | head -1)"
echo "alertmanager: $(amtool --version 2>&1 | head -1)"
