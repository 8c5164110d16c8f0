#!/usr/bin/env bash
# libfaketime for the chaos test (tests/integration/test_chaos.py), which runs one fusion worker with its clock
# ten minutes ahead: Debian's `faketime`. Run by `make test`; nothing of the system is changed but the package.
set -euo pipefail
. "$(dirname "$0")/debian.sh"
lib=/usr/lib/$(uname -m)-linux-gnu/faketime/libfaketime.so.1
if [ ! -e "$lib" ]; then
  debian_install "the chaos test's skewed clock" faketime
fi
echo "faketime: $lib"
