#!/usr/bin/env bash
# Prints the path of a runnable ExifTool, installing Debian's libimage-exiftool-perl (pure Perl)
# into ~/.cache/listing-guard the first time: `apt-get download` needs no root, and the package is
# unpacked, not installed. An exiftool already on PATH is used as is. Needs perl.
set -euo pipefail
if command -v exiftool >/dev/null 2>&1; then
  command -v exiftool
  exit 0
fi
cache=${LG_CACHE_DIR:-$HOME/.cache/listing-guard}
dir=$cache/exiftool
wrapper=$dir/exiftool
if [ ! -x "$wrapper" ]; then
  command -v perl >/dev/null || { echo "exiftool.sh: perl is required" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download libimage-exiftool-perl >&2 && dpkg-deb -x libimage-exiftool-perl_*.deb root)
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -r "$work/root/usr" "$dir/"
  cat > "$wrapper" <<WRAP
#!/bin/sh
exec perl -I"$dir/usr/share/perl5" "$dir/usr/bin/exiftool" "\$@"
WRAP
  chmod +x "$wrapper"
fi
echo "$wrapper"
