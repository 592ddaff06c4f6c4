"""Check that checkpoints written by accnn load and run in MXNet 1.9 (`mx.model.load_checkpoint`).

    python mxnet_check.py ORIG_PREFIX NEW_PREFIX C,H,W [--max-rel-error E]

Runs both models on the same seeded input with MXNet and prints the relative error of the new model's
output against the original's; exits non-zero if either fails to load or run, or if the error exceeds
--max-rel-error (given for full-rank decompositions, which must reproduce the original).
"""
import argparse
import sys

import mxnet as mx
import numpy as np


def outputs(prefix, x):
    sym, args, aux = mx.model.load_checkpoint(prefix, 1)
    # The layer feeding the softmax head: compare logits, not saturated probabilities.
    head = sym.get_children()[0] if sym.name.startswith("softmax") else sym
    exe = head.simple_bind(mx.cpu(), data=x.shape, grad_req="null")
    exe.copy_params_from(args, aux, allow_extra_params=True)
    exe.arg_dict["data"][:] = x
    return exe.forward(is_train=False)[0].asnumpy().astype(np.float64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("orig")
    p.add_argument("new")
    p.add_argument("shape")
    p.add_argument("--max-rel-error", type=float)
    a = p.parse_args()
    shape = (4,) + tuple(int(d) for d in a.shape.split(","))
    x = np.random.RandomState(1).normal(0, 1, shape).astype(np.float32)
    ref, new = outputs(a.orig, x), outputs(a.new, x)
    err = float(np.linalg.norm(new - ref) / np.linalg.norm(ref))
    agree = float((new.argmax(1) == ref.argmax(1)).mean())
    print(f"mxnet {mx.__version__}: {a.new} loads and runs; relative error {err:.3g}, top-1 agreement {agree:.2f}")
    if not np.isfinite(new).all():
        sys.exit(f"{a.new}: non-finite outputs")
    if a.max_rel_error is not None and err > a.max_rel_error:
        sys.exit(f"{a.new}: relative error {err} above {a.max_rel_error}")


if __name__ == "__main__":
    main()
