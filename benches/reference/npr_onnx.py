"""The NPR detector network as an ONNX graph, built from the project's own weights.

`build(model_dir, out_path)` reads MODEL_DIR/model.safetensors, folds BatchNorm into the
convolutions (as the Rust engine does) and writes the graph. Used by the model bench
(`benches/ort_npr.py`) and by the reference pipeline (`benches/reference/pipeline.py`).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

EPS = 1e-5


def build(model_dir, out_path):
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
    # NPR residual: x - up(down(x, 1/2)), nearest, floor indexing (as the Rust engine).
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
    onnx.save(model, out_path)
    return out_path
