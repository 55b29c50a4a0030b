#!/usr/bin/env python3
"""The same NPR network in ONNX Runtime, for the side-by-side model bench.

Usage: ort_npr.py MODEL_DIR OUT_DIR [BATCHES]
Builds an ONNX graph from MODEL_DIR/model.safetensors (BatchNorm folded into the convolutions,
as the candle path does), writes it to OUT_DIR/npr.onnx, checks its logits against the candle
logits the bench wrote (OUT_DIR/parity-*), and prints crops/s at batch 1, 8 and 32 (or the
comma-separated BATCHES) with two intra-op threads.
"""
import json
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

EPS = 1e-5
model_dir, out_dir = sys.argv[1], sys.argv[2]
w = load_file(f"{model_dir}/model.safetensors")
nodes, inits = [], []


def const(name, arr):
    inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
    return name


def conv_bn(x, conv, bn, stride, k):
    weight = w[f"{conv}.weight"]
    scale = w[f"{bn}.weight"] / np.sqrt(w[f"{bn}.running_var"] + EPS)
    fw = weight * scale[:, None, None, None]
    fb = w[f"{bn}.bias"] - w[f"{bn}.running_mean"] * scale
    out = f"{conv}.out"
    nodes.append(helper.make_node("Conv", [x, const(f"{conv}.w", fw), const(f"{conv}.b", fb)], [out],
                                  strides=[stride, stride], pads=[k // 2] * 4, kernel_shape=[k, k]))
    return out


def relu(x):
    nodes.append(helper.make_node("Relu", [x], [x + ".relu"]))
    return x + ".relu"


x = "input"
# NPR residual: x - up(down(x, 1/2)), nearest, floor indexing (as candle's upsample_nearest2d).
half = const("half", [1, 1, 0.5, 0.5])
two = const("two", [1, 1, 2, 2])
nodes.append(helper.make_node("Resize", [x, "", half], ["down"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
nodes.append(helper.make_node("Resize", ["down", "", two], ["up"], mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor"))
nodes.append(helper.make_node("Sub", [x, "up"], ["npr"]))
nodes.append(helper.make_node("Mul", ["npr", const("k23", 2.0 / 3.0)], ["npr23"]))
h = relu(conv_bn("npr23", "conv1", "bn1", 2, 3))
nodes.append(helper.make_node("MaxPool", [h], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
h = "pool"
for layer, blocks, stride in [(1, 3, 1), (2, 4, 2)]:
    for b in range(blocks):
        p = f"layer{layer}.{b}"
        s = stride if b == 0 else 1
        y = relu(conv_bn(h, f"{p}.conv1", f"{p}.bn1", 1, 1))
        y = relu(conv_bn(y, f"{p}.conv2", f"{p}.bn2", s, 3))
        y = conv_bn(y, f"{p}.conv3", f"{p}.bn3", 1, 1)
        ident = conv_bn(h, f"{p}.downsample.0", f"{p}.downsample.1", s, 1) if f"{p}.downsample.0.weight" in w else h
        nodes.append(helper.make_node("Add", [y, ident], [p + ".sum"]))
        h = relu(p + ".sum")
nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"]))
nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
nodes.append(helper.make_node("Gemm", ["flat", const("fc.w", w["fc1.weight"]), const("fc.b", w["fc1.bias"])],
                              ["logit2"], transB=1))
nodes.append(helper.make_node("Flatten", ["logit2"], ["logits"], axis=0))
graph = helper.make_graph(nodes, "npr",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnx.save(model, f"{out_dir}/npr.onnx")

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
