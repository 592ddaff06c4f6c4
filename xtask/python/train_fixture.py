"""Trains a CNN on Fashion-MNIST to convergence and exports it as ONNX (BatchNorm kept: accnn folds it).

Run by `cargo xtask train-fixture --torch PY`; see xtask/src/train.rs. torch trains here about ten
times faster than candle's CPU backward pass, which is why the converged fixtures are made with it.

Preprocessing matches accnn's IDX reader (`--mean 0.286 --std 0.353 --pad 2`): pixel / 255, padded
by 2 black pixels to 32x32, then normalised. Training adds a random 32x32 crop of the image padded by
2 more black pixels, and a random horizontal flip.
"""

import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530


def load_idx(root, split):
    with gzip.open(os.path.join(root, f"{split}-images-idx3-ubyte.gz"), "rb") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(root, f"{split}-labels-idx1-ubyte.gz"), "rb") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    x = np.pad(images.astype(np.float32) / 255.0, ((0, 0), (2, 2), (2, 2)))
    return torch.from_numpy((x - MEAN) / STD).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def augment(x, generator):
    """A random 32x32 crop of the batch padded by 2 black pixels, and a random horizontal flip."""
    black = (0.0 - MEAN) / STD
    padded = F.pad(x, (2, 2, 2, 2), value=black)
    n = x.shape[0]
    dy = torch.randint(0, 5, (n,), generator=generator)
    dx = torch.randint(0, 5, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(32)[None, :])[:, None, :, None].expand(n, 1, 32, 36)
    cropped = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(32)[None, :])[:, None, None, :].expand(n, 1, 32, 32)
    cropped = cropped.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    cropped[flip] = cropped[flip].flip(3)
    return cropped


def conv_bn(cin, cout, stride=1, kernel=3):
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]


class Vgg16(nn.Module):
    """VGG-16's topology (13 convolutions in five stages, three FC layers) at 32x32."""

    def __init__(self, divisor, fc, classes=10):
        super().__init__()
        stages = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
        layers, cin = [], 1
        for width, n in stages:
            for _ in range(n):
                layers += conv_bn(cin, width // divisor) + [nn.ReLU(inplace=True)]
                cin = width // divisor
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(cin, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(fc, fc),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(fc, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class Block(nn.Module):
    """A basic residual block; a 1x1 projection where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(inplace=True), *conv_bn(cout, cout))
        self.shortcut = (
            nn.Sequential(*conv_bn(cin, cout, stride, kernel=1)) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (6n+2 layers), `widen` times wider, on 1-channel 32x32 input."""

    def __init__(self, depth, widen, classes=10):
        super().__init__()
        n = (depth - 2) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Sequential(*conv_bn(1, widths[0]), nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for s, width in enumerate(widths):
            for i in range(n):
                blocks.append(Block(cin, width, 2 if s > 0 and i == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(y)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=["vgg16", "resnet"], required=True)
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--out", required=True, help="the ONNX file to write")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width-divisor", type=int, default=4, help="VGG: channels of VGG-16 divided by this")
    p.add_argument("--fc", type=int, default=256, help="VGG: width of fc6 and fc7")
    p.add_argument("--depth", type=int, default=20, help="ResNet: 6n+2 layers")
    p.add_argument("--widen", type=int, default=2, help="ResNet: widths 16, 32, 64 times this")
    p.add_argument("--limit", type=int, default=0, help="train on the first N images only (smoke runs)")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    train_x, train_y = load_idx(args.data, "train")
    test_x, test_y = load_idx(args.data, "t10k")
    if args.limit:
        train_x, train_y = train_x[: args.limit], train_y[: args.limit]
    if args.arch == "vgg16":
        model = Vgg16(args.width_divisor, args.fc)
    else:
        model = ResNet(args.depth, args.widen)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps = args.epochs * math.ceil(len(train_y) / args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=steps, pct_start=0.15, anneal_strategy="cos"
    )
    started = time.time()
    history = []
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        total, seen = 0.0, 0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            x = augment(train_x[idx], generator)
            loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        acc = accuracy(model, test_x, test_y)
        history.append({"epoch": epoch + 1, "loss": total / seen, "test_top1": acc, "seconds": time.time() - started})
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / seen:.4f}, test top-1 {100 * acc:.2f}% "
            f"({time.time() - started:.0f} s)",
            flush=True,
        )
    model.eval()
    tmp = args.out + ".tmp"
    torch.onnx.export(
        model,
        torch.zeros(1, 1, 32, 32),
        tmp,
        input_names=["data"],
        output_names=["logits"],
        dynamic_axes={"data": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=13,
        do_constant_folding=True,
        dynamo=False,
    )
    os.replace(tmp, args.out)
    summary = {
        "arch": args.arch,
        "parameters": params,
        "seed": args.seed,
        "epochs": args.epochs,
        "seconds": time.time() - started,
        "test_top1": history[-1]["test_top1"] if history else None,
        "history": history,
        "torch": torch.__version__,
    }
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


if __name__ == "__main__":
    main()
