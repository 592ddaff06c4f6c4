"""Compare accnn's engine with MXNet 1.9 on one input.

    python engine_check.py PREFIX INPUT.f32 OUTPUT.f32 N,C,H,W [--max-rel-error 1e-4]

INPUT.f32 and OUTPUT.f32 are raw little-endian float32: the input batch and accnn's logits (the layer
feeding the softmax head). MXNet runs the checkpoint on the same input; the relative error of accnn's
logits against MXNet's must stay below --max-rel-error.
"""
import argparse
import sys

import mxnet as mx
import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("prefix")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("shape")
    p.add_argument("--max-rel-error", type=float, default=1e-4)
    a = p.parse_args()
    shape = tuple(int(d) for d in a.shape.split(","))
    x = np.fromfile(a.input, dtype="<f4").reshape(shape)
    ours = np.fromfile(a.output, dtype="<f4").astype(np.float64)
    sym, args, aux = mx.model.load_checkpoint(a.prefix, 1)
    head = sym.get_children()[0] if sym.name.startswith("softmax") else sym
    exe = head.simple_bind(mx.cpu(), data=shape, grad_req="null")
    exe.copy_params_from(args, aux, allow_extra_params=True)
    exe.arg_dict["data"][:] = x
    ref = exe.forward(is_train=False)[0].asnumpy().astype(np.float64).ravel()
    err = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    print(f"accnn engine vs mxnet {mx.__version__} on {a.prefix} {shape}: relative error {err:.3g}")
    if not err <= a.max_rel_error:
        sys.exit(f"relative error {err} above {a.max_rel_error}")


if __name__ == "__main__":
    main()
