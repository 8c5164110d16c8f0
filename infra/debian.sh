#!/usr/bin/env bash
# Shared by infra/browser.sh, infra/postgres.sh and infra/prometheus.sh: install Debian packages, as root or through sudo.
# debian_install "<what they are for>" package...
debian_install() {
  local why="$1"; shift
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "error: $why needs $* (Debian packages) and this user cannot install them." \
           "Fix: ask an administrator to run \`apt-get install $*\`." >&2
      exit 2
    fi
  fi
  echo "installing $* from Debian ($why)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
