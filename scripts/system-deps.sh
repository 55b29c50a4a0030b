#!/usr/bin/env bash
# Installs the system libraries the build links against, with Debian's package manager, when
# they are missing:
#   libheif-dev (1.15 on Debian 12): HEIC and AVIF decoding (libheif with libde265 and dav1d/aom)
#   pkg-config
# Runs as root, or through sudo when it is there. Idempotent: does nothing when all are present.
set -euo pipefail

missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! pkg-config --exists libheif 2>/dev/null; then missing+=(libheif-dev); fi
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "system-deps: installing ${missing[*]} (apt-get)"
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "system-deps: ${missing[*]} missing and not root (no sudo): install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
