#!/usr/bin/env bash
# The browser the operations view's tests drive: Debian's Chromium and a CJK font, so Chinese renders.
# Run by `make test` (and `make ui-test`); Playwright's own browser download is not used.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
case "$(fc-list : family 2>/dev/null || true)" in *"Noto Sans CJK"*) ;; *) missing+=(fonts-noto-cjk) ;; esac
[ ${#missing[@]} -eq 0 ] && { echo "browser: $(chromium --version 2>/dev/null | tail -1), Noto Sans CJK"; exit 0; }
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: the browser tests need ${missing[*]} (Debian packages) and this user cannot install them." \
       "Fix: ask an administrator to run \`apt-get install ${missing[*]}\`." >&2
  exit 2
fi
echo "installing ${missing[*]} from Debian (the operations view's browser tests)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "browser: $(chromium --version 2>/dev/null | tail -1)"
