#!/usr/bin/env bash
# A real S3 server for the object-storage lake's tests: SeaweedFS (Apache-2.0), its `weed` program built
# from its Go module at a pinned version (the Go module proxy serves it; no binary download). Run by
# `make test`; the tests start their own server from it (127.0.0.1 only, data under var/test/s3).
# Prints the program's path. Built once into var/cache/seaweedfs/<version>/ (about 3 min the first time).
set -euo pipefail
VERSION="v0.0.0-20261109003541-7506e5f91cd6"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${CITYBRAIN_CACHE_DIR:-$ROOT/var/cache}/seaweedfs/$VERSION"
if [ -x "$OUT/weed" ]; then echo "seaweedfs: $OUT/weed"; exit 0; fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: building SeaweedFS (the S3 server of the lake's tests) needs Go. Fix: install Go 1.26 or later (its go.mod asks for 1.26.6)." >&2
  exit 2
fi
echo "building SeaweedFS $VERSION (the S3 server of the object-storage lake's tests; once, a few minutes)"
SRC="$(go mod download -json "github.com/seaweedfs/seaweedfs@$VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
[ -d "$SRC" ] || { echo "error: go mod download gave no source for seaweedfs@$VERSION" >&2; exit 2; }
WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK"; rm -rf "$WORK"' EXIT
cp -r "$SRC/." "$WORK/"
chmod -R u+w "$WORK"
mkdir -p "$OUT"
(cd "$WORK" && go build -o "$OUT/weed.tmp" ./weed)
mv "$OUT/weed.tmp" "$OUT/weed"
echo "seaweedfs: $OUT/weed"
