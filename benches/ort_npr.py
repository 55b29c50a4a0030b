#!/usr/bin/env python3
"""The same NPR network in ONNX Runtime, for the side-by-side model bench.

Usage: ort_npr.py MODEL_DIR OUT_DIR [BATCHES]
Builds an ONNX graph from MODEL_DIR/model.safetensors (BatchNorm folded into the convolutions,
as the candle path does), writes it to OUT_DIR/npr.onnx, checks its logits against the candle
logits the bench wrote (OUT_DIR/parity-*), and prints crops/s at batch 1, 8 and 32 (or the
comma-separated BATCHES) with two intra-op threads.
"""
import json
import os
import sys
import time

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
from npr_onnx import build  # noqa: E402

model_dir, out_dir = sys.argv[1], sys.argv[2]
build(model_dir, f"{out_dir}/npr.onnx")

opts = ort.SessionOptions()
opts.intra_op_num_threads = 2
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(f"{out_dir}/npr.onnx", opts, providers=["CPUExecutionProvider"])
ref = np.array(json.load(open(f"{out_dir}/parity-logits.json")), dtype=np.float32)
inp = np.fromfile(f"{out_dir}/parity-input.f32", dtype="<f4").reshape(len(ref), 3, 224, 224)
got = sess.run(None, {"input": inp})[0].reshape(-1)
diff = float(np.max(np.abs(got - ref)))
print(f"parity: max |logit difference| candle vs onnxruntime = {diff:.2e}")
if diff > 1e-2 * max(1.0, float(np.max(np.abs(ref)))):
    sys.exit(f"onnx graph disagrees with candle: {got} vs {ref}")

crop = inp[:1]
batches = [int(b) for b in sys.argv[3].split(",")] if len(sys.argv) > 3 else [1, 8, 32]
for batch in batches:
    x = np.repeat(crop, batch, axis=0)
    sess.run(None, {"input": x})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 3.0:
        sess.run(None, {"input": x})
        n += batch
    print(f"onnxruntime inference batch {batch:2d}: {n / (time.perf_counter() - start):8.1f} crops/s")
