#!/usr/bin/env bash
# The browser the operations view's tests drive: Debian's Chromium and a CJK font, so Chinese renders.
# Run by `make test` (and `make ui-test`); Playwright's own browser download is not used.
set -euo pipefail
. "$(dirname "$0")/debian.sh"
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
case "$(fc-list : family 2>/dev/null || true)" in *"Noto Sans CJK"*) ;; *) missing+=(fonts-noto-cjk) ;; esac
[ ${#missing[@]} -eq 0 ] && { echo "browser: $(chromium --version 2>/dev/null | tail -1), Noto Sans CJK"; exit 0; }
debian_install "the operations view's browser tests" "${missing[@]}"
echo "browser: $(chromium --version 2>/dev/null | tail -1)"
