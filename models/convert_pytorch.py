#!/usr/bin/env python3
"""Convert a PyTorch NPR / CNNDetection-style ResNet checkpoint into a Listing Guard model dir.

    pip install torch safetensors numpy
    python3 models/convert_pytorch.py NPR.pth models/my-npr --name my-npr [--crop 224 --crops 5]

The checkpoint must be NPR's ResNet (3x3 stride-2 `conv1`, `layer1`, `layer2`, `fc1` with one
output). Keys are torchvision's names, which Listing Guard uses as is; a `module.` prefix (from
DataParallel) is stripped and `num_batches_tracked` buffers are dropped. A CNNDetection checkpoint
(full ResNet-50, 7x7 stem, `fc`) is a different architecture and is refused with a clear message.

The script writes `model.safetensors` and a `model.json` card with the weights' sha256, identity
calibration (a=1, b=0) and threshold 0.5: calibrate on your own validation data with
`listing-guard eval` before relying on the probabilities.
"""
import argparse
import hashlib
import json
import os
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--name", required=True)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--crops", type=int, default=5)
    a = ap.parse_args()

    import torch
    from safetensors.numpy import save_file

    state = torch.load(a.checkpoint, map_location="cpu")
    state = state.get("model", state.get("state_dict", state))
    tensors = {}
    for k, v in state.items():
        k = k.removeprefix("module.")
        if k.endswith("num_batches_tracked"):
            continue
        if k.startswith(("layer3.", "layer4.")):
            continue  # NPR uses the network up to layer2 only
        tensors[k] = v.detach().float().numpy()
    if "fc1.weight" not in tensors or tuple(tensors["conv1.weight"].shape) != (64, 3, 3, 3):
        sys.exit("not an NPR checkpoint (expected conv1.weight of shape 64x3x3x3 and fc1.*)")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "model.safetensors")
    save_file(tensors, path)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    card = {
        "name": a.name,
        "architecture": "npr-resnet50-layer2",
        "parameters": int(sum(t.size for k, t in tensors.items() if "running_" not in k)),
        "input": {"crop_size": a.crop, "crops_per_image": a.crops},
        "normalisation": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "calibration": {"a": 1.0, "b": 0.0},
        "threshold": 0.5,
        "weights": {"file": "model.safetensors", "sha256": sha},
        "training": {"converted_from": os.path.basename(a.checkpoint)},
        "metrics": {},
    }
    with open(os.path.join(a.out, "model.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    print(f"wrote {a.out} ({len(tensors)} tensors, sha256 {sha[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
