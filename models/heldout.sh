#!/usr/bin/env bash
# Unseen-generator check (`make heldout-model`). Trains the recipe of the shipped model twice on
# every ../shared/pixels family except sd3 and stable_cascade (their own VAE / decoder designs),
# once plain and once with B-Free pairs (`listing-guard make-pairs`), then evaluates both on
# those two families against camera photos neither model saw (../shared/corpus/c2pa-rs).
# Reports: target/heldout/{plain,pairs}.json. Small sets: read the figures as a smoke test of
# generalisation, not as a benchmark.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/heldout"
bin="$root/target/release/listing-guard"
held_out="sd3 stable_cascade"

cargo build --release -q -p listing-guard --manifest-path "$root/Cargo.toml"
rm -rf "$work"
"$root/models/prepare_data.sh" "$work/all"
mkdir -p "$work/train/real" "$work/train/ai" "$work/test/real" "$work/test/ai"
cp -r "$work/all/real/skimage" "$work/train/real/"
cp -r "$work/all/real/corpus/." "$work/test/real/"
for fam in "$work/all/ai"/*/; do
  f="$(basename "$fam")"
  case " $held_out " in
    *" $f "*) cp -r "$fam" "$work/test/ai/$f" ;;
    *) cp -r "$fam" "$work/train/ai/$f" ;;
  esac
done
cp -r "$work/train" "$work/train-pairs"
"$bin" make-pairs --data "$work/train-pairs"

for variant in plain pairs; do
  data="$work/train"; [ "$variant" = pairs ] && data="$work/train-pairs"
  "$bin" train --data "$data" --out "$work/$variant" --steps 300 --batch 16
  "$bin" eval --data "$work/test" --model "$work/$variant" --report "$work/$variant.json"
done
