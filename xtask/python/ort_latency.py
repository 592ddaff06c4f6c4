"""Latency of an MXNet checkpoint in onnxruntime, for comparison with `accnn bench`.

    python ort_latency.py PREFIX C,H,W [--batch 1] [--threads 2] [--runs 10]

Converts the checkpoint's chain or DAG of Convolution / Activation(relu) / Pooling / Flatten /
FullyConnected / Dropout / elemwise_add / Concat / SoftmaxOutput nodes to ONNX (opset 13) with
onnx.helper, then times onnxruntime on CPU: warm-up, then the median of --runs runs.
Needs mxnet==1.9.1 (to read the params), onnx and onnxruntime.
"""
import argparse
import json
import time

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def tup(text):
    return [int(v) for v in text.strip("()[] ").split(",") if v.strip()]


def convert(prefix, shape):
    nodes = json.load(open(f"{prefix}-symbol.json"))["nodes"]
    params = {k.split(":", 1)[1]: v.asnumpy() for k, v in mx.nd.load(f"{prefix}-0001.params").items()}
    out_name = {}
    onnx_nodes, inits = [], []
    for i, n in enumerate(nodes):
        a = n.get("attrs", n.get("param", {}))
        ins = [out_name.get(j) for j, *_ in n["inputs"]]
        name = n["name"]
        op = n["op"]
        if op == "null":
            out_name[i] = name
            if name in params:
                inits.append(numpy_helper.from_array(params[name].astype(np.float32), name))
            continue
        out_name[i] = name
        if op == "Convolution":
            k, p = tup(a["kernel"]), tup(a.get("pad", "(0,0)"))
            onnx_nodes.append(helper.make_node("Conv", [x for x in ins if x], [name], kernel_shape=k,
                                               strides=tup(a.get("stride", "(1,1)")), dilations=tup(a.get("dilate", "(1,1)")),
                                               pads=[p[0], p[1], p[0], p[1]], group=int(a.get("num_group", 1))))
        elif op == "Activation":
            onnx_nodes.append(helper.make_node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[a["act_type"]], ins[:1], [name]))
        elif op == "Pooling":
            k, s = tup(a["kernel"]), tup(a.get("stride", "(1,1)"))
            p = tup(a.get("pad", "(0,0)"))
            kind = "MaxPool" if a.get("pool_type", "max") == "max" else "AveragePool"
            onnx_nodes.append(helper.make_node(kind, ins[:1], [name], kernel_shape=k, strides=s, pads=[p[0], p[1], p[0], p[1]],
                                               ceil_mode=int(a.get("pooling_convention", "valid") == "full")))
        elif op in ("Flatten", "flatten"):
            onnx_nodes.append(helper.make_node("Flatten", ins[:1], [name], axis=1))
        elif op == "FullyConnected":
            onnx_nodes.append(helper.make_node("Gemm", [x for x in ins if x], [name], transB=1))
        elif op == "Dropout":
            onnx_nodes.append(helper.make_node("Identity", ins[:1], [name]))
        elif op in ("elemwise_add", "_Plus", "broadcast_add"):
            onnx_nodes.append(helper.make_node("Add", ins[:2], [name]))
        elif op == "Concat":
            onnx_nodes.append(helper.make_node("Concat", ins, [name], axis=int(a.get("dim", 1))))
        elif op in ("SoftmaxOutput", "softmax"):
            onnx_nodes.append(helper.make_node("Softmax", ins[:1], [name], axis=1))
        else:
            raise SystemExit(f"node {name}: operator {op} not handled by this script")
    head = json.load(open(f"{prefix}-symbol.json"))["heads"][0][0]
    graph = helper.make_graph(onnx_nodes, "model",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N"] + list(shape))],
                              [helper.make_tensor_value_info(out_name[head], TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("prefix")
    p.add_argument("shape")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args()
    shape = tuple(int(d) for d in a.shape.split(","))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(convert(a.prefix, shape), opts, providers=["CPUExecutionProvider"])
    x = np.random.RandomState(0).normal(0, 1, (a.batch,) + shape).astype(np.float32)
    for _ in range(2):
        sess.run(None, {"data": x})
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        sess.run(None, {"data": x})
        times.append(time.perf_counter() - t)
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, batch {a.batch}: median {1e3 * float(np.median(times)):.2f} ms "
          f"(IQR {1e3 * float(np.percentile(times, 25)):.2f}-{1e3 * float(np.percentile(times, 75)):.2f})")


if __name__ == "__main__":
    main()
