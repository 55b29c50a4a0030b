#!/usr/bin/env bash
# Rebuilds crates/labeler/assets/fonts/NotoSansSC-Bold-subset.otf from Debian's fonts-noto-cjk
# with fontTools' pyftsubset (from PyPI, in a throwaway virtualenv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download fonts-noto-cjk=1:20220127+repack1-1
dpkg-deb -x fonts-noto-cjk_*.deb noto
python3 -m venv venv
venv/bin/pip install --quiet fonttools
venv/bin/pyftsubset noto/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc --font-number=2 \
  --text="AI生成合成人工智能内容标识-" --unicodes="U+0020-007E" --layout-features='*' \
  --no-hinting --output-file="$root/crates/labeler/assets/fonts/NotoSansSC-Bold-subset.otf"
echo "wrote $root/crates/labeler/assets/fonts/NotoSansSC-Bold-subset.otf"
