"""Exports torchvision classification models to ONNX, as users do (`torch.onnx.export`), for
`cargo xtask real-models --torch PY`. Random weights (coverage, not accuracy), eval mode, batch 1,
3x224x224 (Inception-v3: 299x299). Usage: export_torchvision.py OUT_DIR OPSET [OPSET ...]
Writes OUT_DIR/NAME-opsetK.onnx, skipping files already there, and prints one line per file.
"""

import os
import sys
import warnings

import torch
import torchvision

MODELS = [
    ("resnet50", 224),
    ("mobilenet_v3_large", 224),
    ("efficientnet_b0", 224),
    ("convnext_tiny", 224),
    ("regnet_y_400mf", 224),
    ("densenet121", 224),
    ("googlenet", 224),
    ("inception_v3", 299),
    ("squeezenet1_0", 224),
    ("shufflenet_v2_x1_0", 224),
    ("mnasnet1_0", 224),
]


def main():
    out_dir, opsets = sys.argv[1], [int(o) for o in sys.argv[2:]]
    os.makedirs(out_dir, exist_ok=True)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    for name, size in MODELS:
        for opset in opsets:
            path = os.path.join(out_dir, f"{name}-opset{opset}.onnx")
            if os.path.exists(path):
                print(f"{path} (kept)")
                continue
            kwargs = {"weights": None}
            if name in ("googlenet", "inception_v3"):
                kwargs["aux_logits"] = False
                kwargs["init_weights"] = True
            model = getattr(torchvision.models, name)(**kwargs).eval()
            x = torch.randn(1, 3, size, size)
            tmp = path + ".tmp"
            # The TorchScript exporter writes the requested opset as is; the dynamo one (the default
            # since torch 2.9) writes opset 18 and converts down.
            torch.onnx.export(model, (x,), tmp, opset_version=opset, dynamo=False,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            os.replace(tmp, path)
            print(path)


if __name__ == "__main__":
    main()
