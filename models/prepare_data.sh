#!/usr/bin/env bash
# Assembles the training folder the shipped weights were trained on:
#   real/  natural photos shipped inside the scikit-image wheel (PyPI) and the camera photos of
#          ../shared/corpus/c2pa-rs that carry no manifest;
#   ai/    ../shared/pixels/ai/<family>/ (Stable Diffusion-family outputs).
# Usage: models/prepare_data.sh [OUT]   (default target/train-data)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/train-data}"
shared="${SHARED_DIR:-$root/../shared}"
wheels="$root/target/wheels"
mkdir -p "$out/real/skimage" "$out/real/corpus" "$out/ai" "$wheels"
[ -d "$shared/pixels/ai" ] || { echo "missing $shared/pixels/ai" >&2; exit 1; }

ls "$wheels"/scikit_image-*.whl >/dev/null 2>&1 || \
  python3 -m pip download --quiet --no-deps --only-binary=:all: scikit-image==0.26.0 -d "$wheels"
python3 - "$wheels" "$out/real/skimage" <<'PY'
import glob, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/scikit_image-*.whl"))[-1]
# Natural photographs only: no charts, logos, phantoms, silhouettes or colour wheels.
keep = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
        "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "microaneurysms.png",
        "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png"]
with zipfile.ZipFile(wheel) as z:
    for name in keep:
        with open(f"{sys.argv[2]}/{name}", "wb") as f:
            f.write(z.read("skimage/data/" + name))
PY
for f in IMG_0003.jpg P1000827.jpg earth_apollo17.jpg no_manifest.jpg mars.webp sample1.png; do
  cp "$shared/corpus/c2pa-rs/$f" "$out/real/corpus/"
done
cp -r "$shared/pixels/ai/." "$out/ai/"
echo "real: $(find "$out/real" -type f | wc -l), ai: $(find "$out/ai" -type f | wc -l) -> $out"
