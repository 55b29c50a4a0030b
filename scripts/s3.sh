#!/usr/bin/env bash
# Prints the path of moto_server, an S3-compatible server from PyPI (used by the label-asset
# store's S3 test), installing it into ~/.cache/listing-guard/moto the first time. Needs python3.
set -euo pipefail
cache=${LG_CACHE_DIR:-$HOME/.cache/listing-guard}
venv=$cache/moto
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "moto[server]==5.1.*" >&2
fi
echo "$venv/bin/moto_server"
