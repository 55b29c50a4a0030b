#!/usr/bin/env bash
# Assembles the training folder of the shipped model, one group (source or generator family)
# per first-level folder, so that cross-validation can hold out whole groups:
#   real/<source>/   ../shared/train/real/<source>/ (camera, COCO, OpenImages, e-commerce-like
#                    garment/people/product photos, ...); real/skimage/: the natural photos
#                    inside the scikit-image 0.26.0 wheel (PyPI); real/c2pa-rs-photos/: the
#                    camera photos of ../shared/corpus/c2pa-rs
#   ai/<family>/     ../shared/train/ai/<family>/; ai/comfyui-examples/: ../shared/pixels/ai
#                    (one source repository of SD-family workflows, so one group);
#                    ai/sd-frontend-outputs/: the generator outputs of ../shared/corpus/sd-parsers
# Usage: models/prepare_data.sh [OUT]   (default target/train-data)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/target/train-data}"
shared="${SHARED_DIR:-$root/../shared}"
wheels="$root/target/wheels"
for d in "$shared/train/real" "$shared/train/ai" "$shared/pixels/ai" "$shared/corpus"; do
  [ -d "$d" ] || { echo "missing $d" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/real/skimage" "$out/real/c2pa-rs-photos" "$out/ai/comfyui-examples" \
  "$out/ai/sd-frontend-outputs" "$wheels"

cp -r "$shared/train/real/." "$out/real/"
cp -r "$shared/train/ai/." "$out/ai/"
cp -r "$shared/pixels/ai/." "$out/ai/comfyui-examples/"

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
# Distinct camera photos (the C2PA fixtures repeat one photo under many manifests: one copy).
for f in IMG_0003.jpg P1000827.jpg earth_apollo17.jpg no_manifest.jpg mars.webp sample1.png C.jpg; do
  cp "$shared/corpus/c2pa-rs/$f" "$out/real/c2pa-rs-photos/"
done
# Generator front-end outputs (A1111, ComfyUI, Fooocus, InvokeAI, NovelAI), not the broken files.
find "$shared/corpus/sd-parsers" -name 'parsers__*' -type f -exec cp {} "$out/ai/sd-frontend-outputs/" \;
echo "real: $(find "$out/real" -type f | wc -l) in $(ls "$out/real" | wc -l) sources," \
  "ai: $(find "$out/ai" -type f | wc -l) in $(ls "$out/ai" | wc -l) families -> $out"
